"""Exceptions that the CLI turns into one clear message and a non-zero exit."""


class TfpVaeError(Exception):
    """Base class for user-facing errors of tfp-vae."""


class ConfigError(TfpVaeError, ValueError):
    """A spec value is unknown, of the wrong type or out of its allowed range."""


class DataError(TfpVaeError):
    """A data set is missing, corrupt or cannot be read."""


class StoreError(TfpVaeError):
    """Records cannot be written (e.g. the disk is full); those already written are intact."""
