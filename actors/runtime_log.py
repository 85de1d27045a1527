"""Structured log lines, one JSON object per line on stderr, shaped like etcd's (zap) logs."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

LEVELS = ("debug", "info", "warn", "error", "fatal")


class LogLine:
    """Writes lines at or above `level`; used by the runtimes, never by actors directly."""

    def __init__(self, level: str = "info", stream: TextIO | None = None, **base: Any) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r} (want one of {', '.join(LEVELS)})")
        self._min = LEVELS.index(level)
        self._stream = stream or sys.stderr
        self._base = base

    def __call__(self, level: str, msg: str, **fields: Any) -> None:
        if LEVELS.index(level) < self._min:
            return
        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        line = {"level": level, "ts": ts, "msg": msg, **self._base, **fields}
        self._stream.write(json.dumps(line, default=repr) + "\n")
        self._stream.flush()
