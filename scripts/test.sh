#!/usr/bin/env bash
# Install the assistant with its test extra into .venv and run the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh" test,train,tvm  # train: torch (CPU), transformers, peft for the adapter tests; tvm: apache-tvm for the compiled backend
cd "$ROOT"
exec "${ASSISTANT_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
