"""The package version, in one place (workers of a sweep compare it)."""

__version__ = "0.2.0"
