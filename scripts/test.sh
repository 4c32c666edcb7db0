#!/usr/bin/env bash
# Install the assistant with its test extra into .venv and run the whole test suite; then, for a whole run,
# the GPU tests once more in a Vulkan build of llama.cpp on Mesa's lavapipe (a software Vulkan device), in
# .venv-vulkan (the first time builds that llama.cpp: about 6 minutes on 2 cores; cached afterwards).
# ASSISTANT_GPU_TESTS: auto (default: skipped, saying why, where the Vulkan build tools or a Vulkan device
# cannot be had), vulkan (required), none. Arguments run pytest with them and skip that stage.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh" test,train,tvm  # train: torch (CPU), transformers, peft for the adapter tests; tvm: apache-tvm for the compiled backend
cd "$ROOT"
mode="${ASSISTANT_GPU_TESTS:-auto}"
if [ $# -gt 0 ] || [ "$mode" = none ]; then
    exec "${ASSISTANT_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
fi
"${ASSISTANT_VENV:-$ROOT/.venv}/bin/python" -m pytest
VK="${ASSISTANT_VULKAN_VENV:-$ROOT/.venv-vulkan}"
echo "==> the GPU tests on Vulkan (tests/test_gpu.py in $VK)"
skip() {
    [ "$mode" = vulkan ] && { echo "ASSISTANT_GPU_TESTS=vulkan: $1" >&2; exit 1; }
    echo "==> skipped the Vulkan stage: $1 (ASSISTANT_GPU_TESTS=vulkan makes this an error)"
    exit 0
}
rc=0
env -u ASSISTANT_LLAMA_KERNELS -u ASSISTANT_LLAMA_CMAKE_ARGS ASSISTANT_VENV="$VK" ASSISTANT_GPU=vulkan \
    ASSISTANT_PROFILE=small "$ROOT/scripts/install.sh" test || rc=$?  # the native CPU kernels, plus Vulkan
[ "$rc" = 3 ] && skip "the Vulkan build tools are missing and cannot be installed here"
[ "$rc" = 0 ] || exit "$rc"
found="$("$VK/bin/python" -c 'from assistant.engine.llama_cpp.native import gpu_devices, init_backend as i; i(0); print(len(gpu_devices()))' 2>/dev/null || echo 0)"
[ "$found" != 0 ] || skip "no Vulkan device (mesa-vulkan-drivers gives the software one, lavapipe)"
ASSISTANT_REQUIRE_GPU=1 "$VK/bin/python" -m pytest tests/test_gpu.py -W always::tests.greedy.NearTie
