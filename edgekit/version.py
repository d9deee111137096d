"""The version of edgekit, written once: the package, its manifests and recipe runs, and pyproject.toml read it."""

__version__ = "0.1.0"
