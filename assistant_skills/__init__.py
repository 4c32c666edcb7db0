"""Built-in skills. Each module exposes `skill`, registered in the `assistant.skills` entry-point group
of this project's pyproject.toml exactly as a third-party package registers its own."""
