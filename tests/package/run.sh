#!/usr/bin/env bash
# Proves that noxus-api and noxus-sdk can be published, and that what would
# be published works for a user (docs/testing.md, "Packaging"):
#
#  1. `cargo package` both, in dependency order: cargo verifies noxus-api,
#     then builds noxus-sdk against the *packaged* noxus-api (its local
#     registry), never against the workspace's path;
#  2. unpacks both .crate files outside the workspace, runs the packaged
#     noxus-api's tests with all features, and the packaged SDK's own tests, examples and doctests (`cargo test --all-features`),
#     with noxus-api from its package and `tests/with_test_key.rs` pointed at
#     a started platform (noxus-testserver); checks the SDK with each other
#     TLS feature alone;
#  3. builds a throwaway application that depends on `noxus-sdk = "0.1"`
#     from crates.io, patched to the unpacked packages (nothing from the
#     workspace), and runs the guide's first example against that platform;
#  4. runs the packaged `testing` example, which starts noxus-testserver
#     itself.
#
#   tests/package/run.sh                  what CI runs
#   tests/package/run.sh --allow-dirty    with uncommitted changes
#
# NOXUS_TESTSERVER=/path/to/noxus-testserver skips its cargo build. The
# unpacked builds use $CARGO_TARGET_DIR/package-check (kept between runs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" = /* ]] || target_dir="$root/$target_dir"

allow_dirty=()
if [[ "${1:-}" == "--allow-dirty" ]]; then
    allow_dirty=(--allow-dirty)
    shift
fi
(( $# == 0 )) || { echo "usage: tests/package/run.sh [--allow-dirty]" >&2; exit 2; }

version="$(cd "$root" && cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys
p = {p["name"]: p["version"] for p in json.load(sys.stdin)["packages"]}
assert p["noxus-api"] == p["noxus-sdk"], p
print(p["noxus-sdk"])')"

echo "== cargo package -p noxus-api -p noxus-sdk (version $version)" >&2
# --no-verify: cargo's verification would build both packages (and the
# SDK's dependencies, a minute on two cores) only to build them again below,
# where the unpacked packages are built with every feature and tested, the
# SDK against the packaged noxus-api.
(cd "$root" && cargo package --locked --no-verify "${allow_dirty[@]}" -p noxus-api -p noxus-sdk)

work="$(mktemp -d)"
for name in noxus-api noxus-sdk; do
    tar -xzf "$target_dir/package/$name-$version.crate" -C "$work"
done
api="$work/noxus-api-$version"
sdk="$work/noxus-sdk-$version"
export CARGO_TARGET_DIR="$target_dir/package-check"

# The platform, until this script exits: it runs until its stdin closes.
if [[ -z "${NOXUS_TESTSERVER:-}" ]]; then
    (cd "$root" && env CARGO_TARGET_DIR="$target_dir" \
        cargo build --quiet --locked -p noxus-testkit --bin noxus-testserver)
    NOXUS_TESTSERVER="$target_dir/debug/noxus-testserver"
fi
export NOXUS_TESTSERVER
mkfifo "$work/stdin"
"$NOXUS_TESTSERVER" <"$work/stdin" >"$work/server.json" 2>"$work/server.log" &
server=$!
exec 3>"$work/stdin"
stop_server() {
    exec 3>&- || true
    wait "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap stop_server EXIT
for _ in $(seq 600); do
    [[ -s "$work/server.json" ]] && break
    if ! kill -0 "$server" 2>/dev/null; then
        echo "noxus-testserver exited before it was ready:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
[[ -s "$work/server.json" ]] || { echo "noxus-testserver did not start in 60 s" >&2; exit 1; }
field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/server.json" "$1"; }
base_url="$(field base_url)"
owner_key="$(field owner_key)"

echo "== the packaged noxus-api: cargo test --all-features" >&2
(cd "$api" && cargo test --all-features)

echo "== the packaged noxus-sdk: cargo test --all-features (noxus-api from its package)" >&2
(cd "$sdk" && NOXUS_TEST_API_KEY="$owner_key" NOXUS_BACKEND_URL="$base_url" \
    cargo test --all-features --config "patch.crates-io.noxus-api.path=\"$api\"" 2>&1 |
    tee "$work/sdk-test.log")
# with_test_key skips without a key: make sure it ran against the platform.
if grep -q '^SKIPPED' "$work/sdk-test.log"; then
    echo "a packaged test skipped (see above)" >&2
    exit 1
fi

# The default (rustls-tls-webpki-roots alone) is what the application below builds.
for tls in rustls-tls-native-roots native-tls; do
    echo "== the packaged noxus-sdk with only the $tls feature" >&2
    (cd "$sdk" && cargo check --quiet --lib --no-default-features --features "$tls" \
        --config "patch.crates-io.noxus-api.path=\"$api\"")
done

echo "== an application using noxus-sdk from crates.io (patched to the packages)" >&2
app="$work/app"
mkdir -p "$app/src"
cat >"$app/Cargo.toml" <<EOF
[package]
name = "noxus-sdk-user"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
noxus-sdk = "$version"
tokio = { version = "1", features = ["macros", "rt-multi-thread"] }

# What \`cargo publish\` would upload, instead of crates.io.
[patch.crates-io]
noxus-api = { path = "$api" }
noxus-sdk = { path = "$sdk" }

[workspace]
EOF
cat >"$app/src/main.rs" <<'EOF'
//! The guide's first example: a key from the environment, test the
//! connection, list the workflows.

use noxus_sdk::{Client, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let client = Client::from_env()?; // NOXUS_API_KEY, NOXUS_BACKEND_URL
    let me = client.me().await?;
    println!("key {} ({}) in workspace {}", me.value, me.role, me.workspace_name);
    let workflows = client.workflows().list().await?;
    println!("{} workflows", workflows.len());
    Ok(())
}
EOF
# Same dependency versions as the packaged SDK was verified with.
cp "$sdk/Cargo.lock" "$app/Cargo.lock"
(cd "$app" && cargo build)
used="$(cd "$app" && cargo tree --prefix none -e normal -i noxus-sdk | head -1)"
echo "the application uses: $used" >&2
[[ "$used" == "noxus-sdk v$version ($sdk)" ]] || {
    echo "expected noxus-sdk v$version from $sdk" >&2
    exit 1
}
echo "its dependencies: $(cd "$app" && cargo tree -e normal --prefix none --no-dedupe | sort -u | wc -l) packages (itself included)" >&2
out="$(cd "$app" && NOXUS_API_KEY="$owner_key" NOXUS_BACKEND_URL="$base_url" cargo run --quiet)"
echo "$out"
grep -q "^key noxus_.* in workspace " <<<"$out"
grep -q "^[0-9][0-9]* workflows$" <<<"$out"

echo "== the packaged testing example (starts noxus-testserver itself)" >&2
out="$(cd "$sdk" && cargo run --quiet --all-features --example testing \
    --config "patch.crates-io.noxus-api.path=\"$api\"")"
echo "$out"
grep -q "viewer refused as expected" <<<"$out"
grep -q "✅ done" <<<"$out"

echo "package: noxus-api and noxus-sdk $version packaged, tested as packaged, used by an application" >&2
