#!/usr/bin/env bash
# Install the assistant into .venv, prepare the embedded default model, ask it a question.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh"
exec "${ASSISTANT_VENV:-$ROOT/.venv}/bin/assistant" ask "${*:-What is the capital of France?}"
