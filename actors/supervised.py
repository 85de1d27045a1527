"""A member's process ties its life to its supervisor's (rpc/member.py starts them all)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1  # prctl(2)
# Exit status of a member's process that found its supervisor gone as it started.
EXIT_SUPERVISOR_GONE = 66


def die_with_supervisor(spec: dict[str, Any]) -> None:
    """Be killed (SIGKILL) when the supervisor that started this process goes, so a `kill -9` of
    the supervisor leaves no orphan serving; exit now if it is gone already.

    Each process asks this itself, first thing, rather than the supervisor in a preexec_fn: that
    makes Python fork() instead of vfork(), and a fork while gRPC's threads run (the supervisor's
    initial corruption check talks to peers) can crash the child before it execs."""
    supervisor_pid = spec.get("supervisor_pid")
    if supervisor_pid is None:
        return  # started by hand, not by a supervisor
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor_pid:
        sys.exit(EXIT_SUPERVISOR_GONE)
