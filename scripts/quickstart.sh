#!/usr/bin/env bash
# Install the assistant into .venv, prepare the models (standard profile: Qwen2.5-Coder-1.5B with its
# 0.5B draft), ask it a question. ASSISTANT_PROFILE=small: only the 135M model, and ask with it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh"
exec "${ASSISTANT_VENV:-$ROOT/.venv}/bin/assistant" ask "${*:-What is the capital of France?}"
