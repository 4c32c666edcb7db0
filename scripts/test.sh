#!/usr/bin/env bash
# Install the assistant with its test extra into .venv and run the whole test suite; then, for a whole run,
# the GPU tests once more in a Vulkan build of llama.cpp on Mesa's lavapipe (a software Vulkan device), in
# .venv-vulkan (the first time builds that llama.cpp: about 13 minutes on 2 cores; cached afterwards).
# ASSISTANT_GPU_TESTS=none skips that stage; arguments run pytest with them and skip it too.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh" test,train,tvm  # train: torch (CPU), transformers, peft for the adapter tests; tvm: apache-tvm for the compiled backend
cd "$ROOT"
if [ $# -gt 0 ] || [ "${ASSISTANT_GPU_TESTS:-vulkan}" = none ]; then
    exec "${ASSISTANT_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
fi
"${ASSISTANT_VENV:-$ROOT/.venv}/bin/python" -m pytest
echo "==> the GPU tests on Vulkan (tests/test_gpu.py in ${ASSISTANT_VULKAN_VENV:-.venv-vulkan})"
env -u ASSISTANT_LLAMA_KERNELS -u ASSISTANT_LLAMA_CMAKE_ARGS ASSISTANT_VENV="${ASSISTANT_VULKAN_VENV:-$ROOT/.venv-vulkan}" \
    ASSISTANT_GPU=vulkan ASSISTANT_PROFILE=small "$ROOT/scripts/install.sh" test  # the native CPU kernels, plus Vulkan
ASSISTANT_REQUIRE_GPU=1 "${ASSISTANT_VULKAN_VENV:-$ROOT/.venv-vulkan}/bin/python" -m pytest tests/test_gpu.py -W always::tests.greedy.NearTie
