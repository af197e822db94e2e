#!/usr/bin/env bash
# End-to-end tests of the Residual extension in a real VS Code (code-server) driven by Chromium.
#
#   bash scripts/e2e/run.sh                      # build, package the VSIX, run test/e2e/*.test.mjs
#   bash scripts/e2e/run.sh test/e2e/smoke.test.mjs
#   E2E_MODE=dev bash scripts/e2e/run.sh         # no vsce: load the built repo unpacked (Extension Development Host)
#   E2E_MODE=none bash scripts/e2e/run.sh test/e2e/smoke.test.mjs   # no build at all (harness smoke test only)
#
# Env:
#   E2E_HOME      code-server install (default /tmp/vscode-e2e); installed by scripts/e2e/install.sh if missing
#   E2E_MODE      vsix (default) | dev | none
#   E2E_TIMEOUT   seconds for the whole node --test run (default 600)
#   E2E_KEEP_RUN  1 = keep the scratch dirs (VSIX, harness run dirs) for debugging
# The tests get RESIDUAL_VSIX=<scratch>/residual.vsix (vsix mode) or RESIDUAL_DEV_PATH=<repo> (dev mode);
# see residualExtension() in test/e2e/harness.mjs. Screenshots and logs go to .e2e-artifacts/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export E2E_HOME=${E2E_HOME:-/tmp/vscode-e2e}
MODE=${E2E_MODE:-vsix}
LIMIT=${E2E_TIMEOUT:-600}
case "$MODE" in vsix | dev | none) ;; *) echo "E2E_MODE must be vsix, dev or none (got '$MODE')" >&2; exit 2 ;; esac

WORK=$(mktemp -d /tmp/residual-e2e-XXXXXX)
mkdir -p "$WORK/tmp"
TEST_PID=

# Every process the tests start (node test workers, code-server, extension hosts, Chromium) inherits
# RESIDUAL_E2E_SESSION=$WORK. This shell itself does not have it in its environment (it is set only
# on the test command), so the sweep below can only hit what this run started.
session_pids() {
  grep -lzx "RESIDUAL_E2E_SESSION=$WORK" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | grep -vx "$$" || true
}
cleanup() {
  local rc=$? pids left i
  trap - EXIT INT TERM HUP
  if [ -n "$TEST_PID" ] && kill -0 "$TEST_PID" 2>/dev/null; then kill -TERM "$TEST_PID" 2>/dev/null || true; fi
  pids=$(session_pids)
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null || true
    for i in 1 2 3 4 5 6 7 8 9 10; do
      left=$(session_pids)
      [ -z "$left" ] && break
      sleep 0.5
    done
    left=$(session_pids)
    if [ -n "$left" ]; then
      echo "[e2e] killing leftover processes: $left" >&2
      kill -KILL $left 2>/dev/null || true
    fi
  fi
  if [ "${E2E_KEEP_RUN:-}" = 1 ]; then
    echo "[e2e] kept $WORK"
  else
    # Harness run dirs (/tmp/rse2e-*) normally delete themselves; this catches those of a killed test process.
    if [ -f "$WORK/run-dirs.txt" ]; then
      while IFS= read -r d; do case "$d" in /tmp/rse2e-?*) rm -rf -- "$d" ;; esac; done <"$WORK/run-dirs.txt"
    fi
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

t0=$SECONDS
if [ ! -x "$E2E_HOME/code-server/node_modules/.bin/code-server" ]; then
  echo "[e2e] code-server missing in $E2E_HOME: running scripts/e2e/install.sh"
  bash "$ROOT/scripts/e2e/install.sh"
fi

EXT_ENV=()
case "$MODE" in
  vsix)
    echo "[e2e] npm run build"
    npm run build --silent
    echo "[e2e] vsce package"
    npx vsce package --no-dependencies --allow-missing-repository --skip-license \
      --out "$WORK/residual.vsix" </dev/null >"$WORK/vsce.log" 2>&1 || { cat "$WORK/vsce.log"; exit 1; }
    echo "[e2e] packaged $(du -h "$WORK/residual.vsix" | cut -f1) VSIX in $((SECONDS - t0))s: $WORK/residual.vsix"
    EXT_ENV=(RESIDUAL_VSIX="$WORK/residual.vsix")
    ;;
  dev)
    echo "[e2e] npm run build (dev mode: no VSIX)"
    npm run build --silent
    EXT_ENV=(RESIDUAL_DEV_PATH="$ROOT")
    ;;
  none)
    echo "[e2e] E2E_MODE=none: no build; tests that need Residual skip themselves"
    ;;
esac

if [ $# -gt 0 ]; then FILES=("$@"); else FILES=(test/e2e/*.test.mjs); fi
mkdir -p "$ROOT/.e2e-artifacts"

# Run in the background and `wait`, so that INT/TERM reach the trap at once (bash defers traps while a
# foreground child runs, and `timeout` moves itself out of the terminal's process group).
# TMPDIR: Playwright's own temp dirs land in $WORK and go away with it.
env RESIDUAL_E2E_SESSION="$WORK" TMPDIR="$WORK/tmp" "${EXT_ENV[@]}" \
  timeout -k 10 "$LIMIT" node --test --test-concurrency=1 --test-reporter=spec "${FILES[@]}" &
TEST_PID=$!
set +e
wait "$TEST_PID"
rc=$?
set -e
TEST_PID=
[ $rc -eq 124 ] && echo "[e2e] TIMED OUT after ${LIMIT}s" >&2
echo "[e2e] finished in $((SECONDS - t0))s (rc=$rc); artifacts in .e2e-artifacts/"
exit $rc
