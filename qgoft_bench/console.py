"""The console scripts (``pyproject.toml``: ``qgoft-bench``, ``qgoft-bench-tables``).

They import torch, transformers and Hydra, which takes a second or more; a Ctrl-C or SIGTERM in that time would end
in a traceback from whichever import it hit. These entry points take both signals first, then import the command
(``cli``), so a stop is one line and exit code 130 (SIGTERM: 143) from the first moment the package runs. Once the
command returns (or exits), both are ignored: a signal during the interpreter's shutdown, with every record
written, would only turn a finished command's exit code into -2.
"""

import signal

from qgoft_bench.errors import exit_interrupted, ignore_signals, terminate


def main() -> None:
    """``qgoft-bench``: ``cli.main``, imported once SIGINT and SIGTERM are taken."""
    signal.signal(signal.SIGTERM, terminate)
    try:
        from qgoft_bench.cli import main as command
    except KeyboardInterrupt as err:
        exit_interrupted(err, "while starting, before any run")
    try:
        command()
    finally:
        ignore_signals()


def tables_main() -> None:
    """``qgoft-bench-tables``: ``cli.tables_main``, imported once SIGINT and SIGTERM are taken."""
    signal.signal(signal.SIGTERM, terminate)
    try:
        from qgoft_bench.cli import tables_main as command

        command()
    except KeyboardInterrupt as err:
        exit_interrupted(err, "stopped before it finished")
    finally:
        ignore_signals()
