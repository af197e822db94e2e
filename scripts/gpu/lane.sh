#!/usr/bin/env bash
# The GPU-path lane: test/gpu/*.test.ts on ONNX Runtime's WebGPU provider, on a software Vulkan driver (Mesa lavapipe,
# fetched privately by lavapipe.sh), so the WebGPU code path is tested on machines without a GPU. A driver that cannot
# be had fails the lane; it is never skipped. RESIDUAL_GPU_LANE=1 tells the tests the same: no adapter is a failure.
#
#   bash scripts/gpu/lane.sh    # or: npm run test:gpu
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() { printf 'GPU-path lane: %s\n' "$*" >&2; exit 1; }

# lavapipe.sh reports progress on stderr and prints the environment as its last stdout line.
env_line="$(bash scripts/gpu/lavapipe.sh | tail -n 1)" \
  || fail "could not set up the software Vulkan driver (scripts/gpu/lavapipe.sh failed; see its message above)"
case "$env_line" in
  "export LD_LIBRARY_PATH="*) ;;
  *) fail "scripts/gpu/lavapipe.sh printed no environment line (got: ${env_line:-nothing})" ;;
esac
eval "$env_line"
export RESIDUAL_GPU_LANE=1

echo "GPU-path lane: WebGPU on Mesa $(cat .cache/lavapipe/mesa-version 2>/dev/null || echo '?') lavapipe ($VK_DRIVER_FILES)"
exec node --import tsx --test --test-reporter=spec test/gpu/*.test.ts
