#!/usr/bin/env python3
"""Fails when a workspace crate declares a rust-version that one of its
locked dependencies does not accept.

For each workspace member, the dependencies a user of the crate compiles
(normal and build dependencies, all features, every target platform, as
`cargo tree` resolves them from Cargo.lock) are compared with the
`rust-version` each of them declares (from `cargo metadata`). A crate with
no rust-version of its own is checked against nothing (so it passes) and
the report says so. Dev-dependencies are left out: only the crate's own
tests need them.

This proves what the lockfile needs, not that the code itself compiles
with that Rust: CI has one toolchain. (clippy's `incompatible_msrv` lint,
run with -D warnings, catches uses of the standard library newer than the
declared rust-version.)

    tests/package/check_rust_version.py          # every workspace member
    tests/package/check_rust_version.py noxus-sdk noxus-api
"""

import json
import subprocess
import sys


def version_tuple(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main(selected):
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--all-features"],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
    )
    packages = {p["id"]: p for p in metadata["packages"]}
    members = [packages[i] for i in metadata["workspace_members"]]
    if selected:
        unknown = set(selected) - {m["name"] for m in members}
        if unknown:
            sys.exit(f"error: not workspace members: {', '.join(sorted(unknown))}")
        members = [m for m in members if m["name"] in selected]
    declared_by_name_version = {}
    for p in metadata["packages"]:
        declared_by_name_version.setdefault((p["name"], p["version"]), set()).add(
            p.get("rust_version")
        )

    failures = 0
    for member in sorted(members, key=lambda m: m["name"]):
        tree = subprocess.run(
            [
                "cargo", "tree", "--locked", "-p", f"{member['name']}@{member['version']}",
                "--all-features", "--target", "all", "-e", "normal,build",
                "--prefix", "none", "--no-dedupe", "--format", "{p}",
            ],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        closure = set()
        for line in tree.splitlines():
            fields = line.split()
            if len(fields) < 2 or not fields[1].startswith("v"):
                continue
            closure.add((fields[0], fields[1][1:]))
        closure.discard((member["name"], member["version"]))

        needs = []
        for name, version in closure:
            for rust_version in declared_by_name_version.get((name, version), {None}):
                if rust_version:
                    needs.append((version_tuple(rust_version), rust_version, f"{name} {version}"))
        needs.sort(reverse=True)
        highest = needs[0] if needs else None
        declared = member.get("rust_version")
        summary = (
            f"{member['name']}: declares rust-version {declared or '(none)'}; "
            f"{len(closure)} locked dependencies, the most demanding "
            + (f"{highest[2]} ({highest[1]})" if highest else "declares none")
        )
        if declared is None:
            print(f"{summary} (nothing to check)")
            continue
        too_new = [n for n in needs if n[0] > version_tuple(declared)]
        if too_new:
            failures += 1
            print(f"FAILED {summary}; these need a newer Rust than {declared}:")
            for _, rust_version, package in too_new:
                print(f"    {package} (rust-version {rust_version})")
        else:
            print(f"ok {summary}")
    sys.stdout.flush()
    if failures:
        sys.exit(
            "error: a declared rust-version is lower than what Cargo.lock needs: raise it, "
            "or lower the dependency (`cargo update -p <name> --precise <version>`)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
