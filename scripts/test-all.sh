#!/usr/bin/env bash
# All tests, in layers: type-check, lint, unit + oracle (plain Node), the GPU-path lane (WebGPU on Mesa's software
# Vulkan driver), then end-to-end in a real VS Code (code-server). Installs what it needs (npm packages; lavapipe,
# unpacked privately; Chromium and code-server for the end-to-end test) and is safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
export ONNXRUNTIME_NODE_INSTALL=skip   # its install script would download CUDA binaries (no network here)
step() { printf '\n=== %s (%ss)\n' "$1" "$SECONDS"; }

step "npm install"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
step "type-check"
npm run -s typecheck
step "lint"
npm run -s lint
step "build"
npm run -s build
step "unit and oracle tests"
npm run -s test:unit
step "GPU-path lane (WebGPU on a software Vulkan driver)"
npm run -s test:gpu
step "end-to-end install (apt: chromium; npm: code-server)"
E2E_HOME="${E2E_HOME:-/tmp/vscode-e2e}" timeout -k 10 900 bash scripts/e2e/install.sh
step "end-to-end tests in real VS Code"
E2E_HOME="${E2E_HOME:-/tmp/vscode-e2e}" bash scripts/e2e/run.sh
step "all tests passed"
