"""The console scripts (``pyproject.toml``: ``qgoft-bench``, ``qgoft-bench-tables``).

They import torch, transformers and Hydra, which takes a second or more; a Ctrl-C or SIGTERM in that time would end
in a traceback from whichever import it hit. These entry points take both signals first, then import the command
(``cli``), so a stop is one line and exit code 130 (SIGTERM: 143) from the first moment the package runs.
"""

import signal
import sys

from qgoft_bench.errors import Terminated


def terminate(signum: int, frame) -> None:
    """The SIGTERM handler: raise ``Terminated`` (a ``KeyboardInterrupt``), so that a preemption stops a run as
    Ctrl-C does, with an ``interrupted`` record."""
    raise Terminated()


def exit_interrupted(err: KeyboardInterrupt, outcome: str) -> None:
    """Print one line, ``interrupted (Ctrl-C): <outcome>`` (SIGTERM for ``Terminated``), and exit 130 or 143 (128 +
    the signal's number, as shells report it); further signals are ignored on the way out."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # no traceback from a second signal on the way out
        signal.signal(sig, signal.SIG_IGN)
    what = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"
    print(f"interrupted ({what}): {outcome}", file=sys.stderr)
    sys.exit(143 if isinstance(err, Terminated) else 130)


def main() -> None:
    """``qgoft-bench``: ``cli.main``, imported once SIGINT and SIGTERM are taken."""
    signal.signal(signal.SIGTERM, terminate)
    try:
        from qgoft_bench.cli import main as command
    except KeyboardInterrupt as err:
        exit_interrupted(err, "while starting, before any run")
    command()


def tables_main() -> None:
    """``qgoft-bench-tables``: ``cli.tables_main``, imported once SIGINT and SIGTERM are taken."""
    signal.signal(signal.SIGTERM, terminate)
    try:
        from qgoft_bench.cli import tables_main as command

        command()
    except KeyboardInterrupt as err:
        exit_interrupted(err, "stopped before it finished")
