"""Synchronise tests on conditions, not on time: poll a predicate until it holds or a deadline passes."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Poll `predicate` until it returns a true value (returned), or fail naming `what` after `timeout_s`.

    An exception from the predicate counts as "not yet"; the last one is shown if time runs out.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - a server not up yet, a connection refused...
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting until {what} (last: {last!r})")
        time.sleep(interval_s)


class Collected:
    """A running process's stdout, gathered as it comes by a thread, so that a test can wait on it."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._chunks: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._chunks.append(line)

    def text(self) -> str:
        with self._lock:
            return "".join(self._chunks)

    def wait_for(self, predicate: Callable[[str], object], timeout_s: float, what: str) -> str:
        """Until predicate(output so far) holds; the output then."""
        wait_until(lambda: predicate(self.text()), timeout_s, what)
        return self.text()

    def finish(self, sig: int = signal.SIGINT, timeout_s: float = 20) -> tuple[int, str, str]:
        """Signal the process, wait for it; (exit code, all its stdout, its stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # leave nothing running behind a failed test
            self.proc.wait()
            raise
        self._reader.join(timeout=timeout_s)
        err = self.proc.stderr.read() if self.proc.stderr is not None else ""
        return code, self.text(), err
