"""Loopback ports for local clusters of real processes (chaos runs, benchmarks, tests).

Asking the kernel for port 0 and closing the socket is racy twice over: the kernel may hand the
same port out again a moment later (two members of one cluster then share a port), and any
outgoing connection may take it as its ephemeral port before the server binds it. So ports come
from below the kernel's ephemeral range, and one process never hands out the same port twice.
"""

from __future__ import annotations

import os
import socket
import threading

_lock = threading.Lock()
_handed_out: set[int] = set()
_LOWEST_PORT = 10_000


def _pool() -> range:
    """The ports below the kernel's ephemeral range (where outgoing connections never land)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768  # Linux's default
    return range(_LOWEST_PORT, max(_LOWEST_PORT + 1000, ephemeral_low))


def free_port() -> int:
    """A loopback port nobody listens on now, and that this process has not handed out before."""
    pool = _pool()
    # Processes start at different places in the pool, so concurrent runs rarely meet.
    start = (os.getpid() * 7919) % len(pool)
    with _lock:
        for step in range(len(pool)):
            port = pool[(start + len(_handed_out) + step) % len(pool)]
            if port in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port left below the ephemeral range")
