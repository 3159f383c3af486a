"""Errors the harness reports to users as one clear paragraph, before any training."""


class ConfigError(ValueError):
    """A setting the user chose cannot be run; the message names the key and what is allowed."""
