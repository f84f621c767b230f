"""The package version (read by pyproject.toml and `llmbuilder --version`)."""

__version__ = "0.1.0"
