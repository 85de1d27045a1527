"""A Python etcd client we did not write (python-etcd3, from PyPI) against petcd.

python-etcd3 ships protobuf code generated for an old protobuf, which the pure-Python
protobuf runtime still loads; it runs in its own process so that its copy of etcd's
protos does not meet ours in one descriptor pool.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.servers import start_petcd

SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import etcd3

    host, port = sys.argv[1].rsplit(":", 1)
    c = etcd3.client(host=host, port=int(port))
    c.put("lib/a", "1")
    value, meta = c.get("lib/a")
    assert value == b"1" and meta.version == 1, (value, meta)
    assert [v for v, _ in c.get_prefix("lib/")] == [b"1"]

    ok, _ = c.transaction(compare=[c.transactions.value("lib/a") == "1"],
                          success=[c.transactions.put("lib/a", "2")], failure=[])
    assert ok and c.get("lib/a")[0] == b"2"
    ok, _ = c.transaction(compare=[c.transactions.version("lib/a") == 99], success=[], failure=[])
    assert not ok

    events = []
    # From the next revision: the events come whenever the watch is in place.
    it, cancel = c.watch_prefix("lib/w/", start_revision=c.get_response("lib/").header.revision + 1)
    def reader():
        for ev in it:
            events.append((type(ev).__name__, ev.key, ev.value))
            if len(events) == 3:
                break
    t = threading.Thread(target=reader); t.start()
    c.put("lib/w/1", "x"); c.put("lib/w/2", "y"); c.delete("lib/w/1")
    t.join(10); cancel()
    assert events == [("PutEvent", b"lib/w/1", b"x"), ("PutEvent", b"lib/w/2", b"y"), ("DeleteEvent", b"lib/w/1", b"")], events

    lease = c.lease(10)
    c.put("lib/leased", "v", lease=lease)
    assert lease.remaining_ttl > 0 and lease.keys == [b"lib/leased"]
    lease.refresh()
    lease.revoke()
    assert c.get("lib/leased")[0] is None

    with c.lock("lib-lock", ttl=10) as lock:
        assert lock.is_acquired()
    members = list(c.members)
    assert len(members) == 1 and members[0].name == "default"
    status = c.status()
    assert status.leader.id == members[0].id
    print("python-etcd3 ok")
    """
)


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    server = start_petcd(str(tmp_path_factory.mktemp("lib") / "data"))
    yield server
    server.stop()


def test_python_etcd3_against_petcd(member):
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, member.endpoint], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "python-etcd3 ok"
