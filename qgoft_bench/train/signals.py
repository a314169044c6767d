"""Ctrl-C and SIGTERM held back while a few lines must finish together (a record's write, an optimizer update)."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block are held and delivered (their handlers run) when it ends.

    Handlers are swapped, not the signal mask: Python runs signal handlers in the main thread whichever thread the
    OS delivers a signal to, and torch keeps threads of its own. Outside the main thread (where handlers cannot be
    set) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending and callable(previous[pending[0]]):
            previous[pending[0]](pending[0], None)  # Ctrl-C raises KeyboardInterrupt, SIGTERM Terminated, now
