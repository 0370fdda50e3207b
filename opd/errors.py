"""The project's error types: the bottom of the import graph (imports nothing of ``opd``).

Every module that refuses an input raises one of these, so a caller can catch them without
importing the module that checks (and its dependencies):

* ``ConfigError``: an invalid workflow config value, raised before any job runs; the message
  starts with the key (``train_defaults.lr: ...``) and says the fix;
* ``DataError``: a dataset without the shape a stage needs; the message names the file;
* ``StackMissing``: a backend's tool stack is not installed where the config says.

    from opd.errors import ConfigError
"""
from __future__ import annotations


class ConfigError(ValueError):
    """An invalid config value; the message starts with the key."""


class DataError(ValueError):
    """A dataset does not have the shape a stage needs; the message says which file and why."""


class StackMissing(FileNotFoundError):
    """A backend's tool stack is not installed where the config says."""
