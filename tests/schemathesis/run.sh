#!/usr/bin/env bash
# The OpenAPI contract run: schemathesis (pinned in requirements.txt, in
# target/schemathesis-venv) against a server it starts (noxus-testserver
# --fuzz), every operation, every check. See docs/testing.md.
#
#   tests/schemathesis/run.sh                 set up, build the server, run
#   tests/schemathesis/run.sh --setup-only    only create the virtualenv
#   tests/schemathesis/run.sh [st run args]   extra arguments go to both runs
#                                             (e.g. --seed 42, -n 100)
#
# NOXUS_TESTSERVER=/path/to/noxus-testserver skips the cargo build.
# SCHEMATHESIS_PYTHON picks the interpreter for a new virtualenv (python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/schemathesis-venv"

setup_only=0
if [[ "${1:-}" == "--setup-only" ]]; then
    setup_only=1
    shift
fi

# A virtualenv copied from another checkout still points there: make a new one.
if [[ -x "$venv/bin/python" ]] &&
    [[ "$("$venv/bin/python" -c 'import sys; print(sys.prefix)' 2>/dev/null)" != "$venv" ]]; then
    echo "$venv belongs to another checkout: making a new one" >&2
    rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating virtualenv $venv" >&2
    mkdir -p "$root/target"
    "${SCHEMATHESIS_PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/requirements.txt"
if (( setup_only )); then
    echo "schemathesis installed in $venv" >&2
    exit 0
fi

if [[ -z "${NOXUS_TESTSERVER:-}" ]]; then
    (cd "$root" && cargo build --quiet -p noxus-testkit --bin noxus-testserver)
    target_dir="${CARGO_TARGET_DIR:-target}"
    [[ "$target_dir" = /* ]] || target_dir="$root/$target_dir"
    NOXUS_TESTSERVER="$target_dir/debug/noxus-testserver"
fi

# The server runs until its stdin closes: hold a FIFO open, close it at exit.
work="$(mktemp -d)"
mkfifo "$work/stdin"
"$NOXUS_TESTSERVER" --fuzz <"$work/stdin" >"$work/server.json" 2>"$work/server.log" &
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

field() { "$venv/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/server.json" "$1"; }
base_url="$(field base_url)"
export NOXUS_FUZZ_KEY NOXUS_REVOKER_KEY NOXUS_SCRATCH_WORKSPACE_ID
NOXUS_FUZZ_KEY="$(field fuzz_key)"
NOXUS_REVOKER_KEY="$(field revoker_key)"
NOXUS_SCRATCH_WORKSPACE_ID="$(field scratch_workspace_id)"

cd "$root"
passed=0
failed=0
# Revoke and rotate first, on the scratch workspace (which the main run may delete).
for config in keys api; do
    echo "== schemathesis: $config.toml" >&2
    if "$venv/bin/python" -m schemathesis.cli --config-file "$here/$config.toml" \
        run "$base_url/openapi.json" "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done
echo "schemathesis: $passed passed, $failed failed"
(( failed == 0 ))
