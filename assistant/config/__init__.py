"""Integrator configuration: one TOML file over an embedded default."""

from assistant.config.loader import ConfigError, ConfigProblem, deep_merge, load_config
from assistant.config.schema import AssistantConfig, EngineConfig

__all__ = ["AssistantConfig", "ConfigError", "ConfigProblem", "EngineConfig", "deep_merge", "load_config"]
