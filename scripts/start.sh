#!/usr/bin/env bash
# One command for a new user: installs everything (npm packages, Debian Chromium-free code-server recipe), builds and
# packages Residual, installs it into a real VS Code (code-server, bound to 127.0.0.1 only) and opens the demo
# workspace. Re-running is safe and fast. PORT (default 8080) and RESIDUAL_HOME (default ~/.residual-vscode) adjust it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export ONNXRUNTIME_NODE_INSTALL=skip
PORT="${PORT:-8080}"
HOME_DIR="${RESIDUAL_HOME:-$HOME/.residual-vscode}"
export E2E_HOME="${E2E_HOME:-/tmp/vscode-e2e}"

step() { printf '\n[residual] %s (%ss)\n' "$1" "$SECONDS"; }
step "1/4 npm packages (first run: a minute or two)"
[ -d node_modules ] || npm ci --no-audit --no-fund
step "2/4 build"
npm run -s build
step "3/4 code-server and Chromium (apt-get as root when missing; npm code-server@4.100.3)"
bash scripts/e2e/install.sh
step "4/4 package Residual and install it into code-server"
mkdir -p "$HOME_DIR"/{user-data/User,extensions,xdg}
npx vsce package --no-dependencies --allow-missing-repository --skip-license --out "$HOME_DIR/residual.vsix" </dev/null >/dev/null
SETTINGS="$HOME_DIR/user-data/User/settings.json"
[ -f "$SETTINGS" ] || cat > "$SETTINGS" <<'JSON'
{ "workbench.startupEditor": "none", "security.workspace.trust.enabled": false, "telemetry.telemetryLevel": "off",
  "extensions.autoCheckUpdates": false, "extensions.autoUpdate": false, "update.mode": "none" }
JSON
: > "$HOME_DIR/config.yaml"
CS="$E2E_HOME/code-server/node_modules/.bin/code-server"
COMMON=(--config "$HOME_DIR/config.yaml" --user-data-dir "$HOME_DIR/user-data" --extensions-dir "$HOME_DIR/extensions")
export XDG_CONFIG_HOME="$HOME_DIR/xdg/config" XDG_DATA_HOME="$HOME_DIR/xdg/data" XDG_CACHE_HOME="$HOME_DIR/xdg/cache" EXTENSIONS_GALLERY='{}'
"$CS" "${COMMON[@]}" --install-extension "$HOME_DIR/residual.vsix" --force >/dev/null
URL="http://127.0.0.1:$PORT/?folder=$ROOT/demo-workspace"
echo
echo "================================================================================"
echo "  Residual is running in VS Code (code-server). Open in your browser:"
echo
echo "    $URL"
echo
echo "  then open prompt.py, select a line, right-click → Analyze Selection."
echo "  Ctrl+C stops the server."
echo "================================================================================"
exec "$CS" "${COMMON[@]}" --bind-addr "127.0.0.1:$PORT" --auth none --disable-telemetry --disable-update-check \
  --disable-workspace-trust --disable-getting-started-override "$ROOT/demo-workspace"
