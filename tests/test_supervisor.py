"""A member's processes live and die with their supervisor (actors/supervised.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.servers import start_petcd
from tests.waiting import wait_until


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_kill_9_of_the_supervisor_takes_every_process_of_the_member_with_it(tmp_path):
    server = start_petcd(str(tmp_path / "data"))
    try:
        children = _children(server.proc.pid)
        assert len(children) == 5, children  # raft, apply, watch, lease, gateway
        server.proc.kill()
        server.proc.wait(timeout=10)
        wait_until(lambda: not any(_alive(p) for p in children), 20, "every process of the member to go")
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


def test_a_process_whose_supervisor_is_gone_exits_at_once():
    """Its spec names a supervisor that is not its parent: gone before it could ask to die with it."""
    not_the_parent = 1
    for module in ("petcd.rpc.gateway", "petcd.rpc.peer_tls"):
        done = subprocess.run([sys.executable, "-m", module, json.dumps({"supervisor_pid": not_the_parent})], capture_output=True, timeout=60)
        assert done.returncode == 66, (module, done.stderr[-500:])
    done = subprocess.run([sys.executable, "-m", "petcd.actors.proc_runtime", "watch", json.dumps({"supervisor_pid": not_the_parent, "config": {}})],
                          capture_output=True, timeout=60)
    assert done.returncode == 66, done.stderr[-500:]
