#!/usr/bin/env bash
# Compatibility test of the official Noxus Python client (PyPI noxus-sdk,
# pinned in requirements.txt) against our server.
#
#   tests/python/run.sh                 set up, build noxus-testserver, run the tests
#   tests/python/run.sh --setup-only    only create target/python-venv and install
#                                       (CI runs this before `cargo test --workspace`,
#                                       whose official_python_client test then runs them)
#   tests/python/run.sh [pytest args]   extra arguments go to pytest (e.g. -k viewer)
#   tests/python/run.sh --client 0.5 ...
#                                       the same against the previous release line
#                                       (requirements-0.5.txt, target/python-venv-0.5);
#                                       --client comes first, before --setup-only
#
# NOXUS_TESTSERVER=/path/to/noxus-testserver skips the cargo build.
# PYTHON=python3.11 picks the interpreter for a new virtualenv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/python-venv"
requirements="$here/requirements.txt"
if [[ "${1:-}" == "--client" ]]; then
    case "${2:-}" in
        0.6) ;;
        0.5)
            venv="$root/target/python-venv-0.5"
            requirements="$here/requirements-0.5.txt"
            ;;
        *)
            echo "--client takes 0.6 (the default) or 0.5, not '${2:-}'" >&2
            exit 2
            ;;
    esac
    shift 2
fi

setup_only=0
if [[ "${1:-}" == "--setup-only" ]]; then
    setup_only=1
    shift
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating virtualenv $venv" >&2
    mkdir -p "$root/target"
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$requirements"

if (( setup_only )); then
    echo "official client installed in $venv" >&2
    exit 0
fi

if [[ -z "${NOXUS_TESTSERVER:-}" ]]; then
    (cd "$root" && cargo build -p noxus-testkit --bin noxus-testserver)
    target_dir="${CARGO_TARGET_DIR:-target}"
    [[ "$target_dir" = /* ]] || target_dir="$root/$target_dir"
    export NOXUS_TESTSERVER="$target_dir/debug/noxus-testserver"
fi

cd "$root"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/python/test_official_client.py "$@"
