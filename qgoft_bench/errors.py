"""Errors a user can fix. The CLI prints them as one line (``error: ...``) and exits non-zero, no traceback; a
Ctrl-C or SIGTERM ends it with one line too (``exit_interrupted``)."""

import signal
import sys


class QgoftError(Exception):
    """Base class: the message names the problem and the fix."""

    def __init__(self, message: str = "") -> None:
        # A DataLoader worker's error comes back to the main process as type(err)(worker traceback text); keep the
        # worker's own one-line message, the traceback's last line, so the CLI still prints one line.
        if "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].partition(": ")[2] or message
        super().__init__(message)


class ConfigError(QgoftError):
    """A bad option, override or combination of options."""


class DataError(QgoftError):
    """A data folder or file is missing or malformed, or the hub is unreachable for a data set."""


class ModelSourceError(QgoftError):
    """Model weights cannot be found locally, in the pip package, or on the hub."""


class DivergedError(QgoftError):
    """The training loss became non-finite (NaN or inf): the run stops and its record says ``diverged``."""


class RecordWriteError(QgoftError):
    """A run's record could not be written (its JSON was printed on stderr instead)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a cluster scheduler sends before it kills a job), raised like Ctrl-C so the run's record says
    ``interrupted``; the CLI installs the handler."""


def terminate(signum: int, frame) -> None:
    """The SIGTERM handler: raise ``Terminated`` (a ``KeyboardInterrupt``), so that a preemption stops a run as
    Ctrl-C does, with an ``interrupted`` record."""
    raise Terminated()


def exit_interrupted(err: KeyboardInterrupt, outcome: str) -> None:
    """Print one line, ``interrupted (Ctrl-C): <outcome>`` (SIGTERM for ``Terminated``), and exit 130 or 143 (128 +
    the signal's number, as shells report it); further signals are ignored on the way out."""
    ignore_signals()  # no traceback from a second signal on the way out
    what = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"
    print(f"interrupted ({what}): {outcome}", file=sys.stderr)
    sys.exit(143 if isinstance(err, Terminated) else 130)


def ignore_signals() -> None:
    """Ignore SIGINT and SIGTERM from here on: on the way out, when nothing is left to interrupt."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
