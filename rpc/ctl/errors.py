"""etcdctl's exit codes and error reporting (ctlv3/command/error.go)."""

from __future__ import annotations

import os
import sys

EXIT_SUCCESS = 0
EXIT_ERROR = 1
EXIT_BAD_CONNECTION = 2
EXIT_INVALID_INPUT = 3  # for txn, watch command
EXIT_BAD_FEATURE = 4  # provided a valid flag with an unsupported value
EXIT_INTERRUPTED = 5
EXIT_IO = 6
EXIT_BAD_ARGS = 128


class CtlExit(Exception):
    """Unwinds to main(), which flushes output and exits with ``code``."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def out(data: bytes | str) -> None:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    sys.stdout.buffer.write(data)


def err(data: bytes | str) -> None:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


def flush() -> None:
    """Go writes straight to the file descriptors: long-running commands
    flush after each output so that nothing is lost when a signal kills them."""
    sys.stdout.buffer.flush()


def exit_with_error(code: int, message: str):
    """ExitWithError: print ``Error: <err>`` on stderr and exit with ``code``."""
    err("Error: %s\n" % message)
    raise CtlExit(code)


def go_panic(message: str):
    """A Go runtime panic: etcdctl dies with exit status 2 and a goroutine trace."""
    err("panic: %s\n\ngoroutine 1 [running]:\n" % message)
    raise CtlExit(2)


def flush_and_exit(code: int) -> None:
    try:
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # pragma: no cover
        pass
    try:
        sys.stderr.buffer.flush()
    except BrokenPipeError:  # pragma: no cover
        pass
    os._exit(code)
