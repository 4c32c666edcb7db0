"""The llama.cpp backend: `native.py` wraps the library (backend, log capture, quantizer, vocabulary
and grammar, shared by every backend), `engine.py` is `LlamaCppEngine`."""

from assistant.engine.llama_cpp.engine import LlamaCppEngine
from assistant.engine.llama_cpp.native import LlamaVocab, quantize_model, system_info

__all__ = ["LlamaCppEngine", "LlamaVocab", "quantize_model", "system_info"]
