"""User-facing errors: each one says what was wrong, where, and what is allowed."""


class FedPITError(Exception):
    """Base class for errors reported to the user without a traceback."""


class ConfigError(FedPITError):
    """An invalid configuration value (names the key, the value and what is allowed)."""


class DataError(FedPITError):
    """Unreadable or invalid data (names the file and line where possible)."""


class ModelError(FedPITError):
    """A model that cannot be found or loaded."""


class BaseModelMismatchError(ModelError):
    """A node's base model (weights, tokenizer or template) differs from the server's."""
