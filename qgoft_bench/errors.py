"""Errors a user can fix. The CLI prints them as one line (``error: ...``) and exits non-zero, no traceback."""


class QgoftError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(QgoftError):
    """A bad option, override or combination of options."""


class DataError(QgoftError):
    """A data folder or file is missing or malformed, or the hub is unreachable for a data set."""


class ModelSourceError(QgoftError):
    """Model weights cannot be found locally, in the pip package, or on the hub."""


class DivergedError(QgoftError):
    """The training loss became non-finite (NaN or inf): the run stops and its record says ``diverged``."""
