"""The `etcd3gw` client (PyPI; it speaks only etcd's HTTP/JSON gateway) against real etcd 3.4 and
petcd: one script of calls runs on a fresh server of each, started with the same identity
(tests/servers.run_on_etcd_and_petcd), and the two transcripts must be equal.

The script is deterministic on etcd (one client, each step after the last one's answer; a watch
starts from a given revision or is waited for before the write it must see), so revisions,
versions, member and cluster ids, raft terms and the answers' JSON compare exactly. What
legitimately differs is masked: lease IDs (etcd derives them from the clock) become their order
of appearance, a lease's remaining TTL becomes whether it is within (0, granted], a member's
client URL, Status's version and sizes; a lease's keys are sorted (etcd lists them in Go map
order). Covered: put/get (metadata, revision, sort, limit, keys_only, count_only), prefix get and
delete, create-if-absent, replace, raw transactions (both branches, an error), leases (grant, put
and create with a lease, ttl, refresh, keys, revoke, unknown lease, expiry), watches (history,
live, prefix with prev_kv and a filter, watch_once, its timeout, the server dropping a cancelled
watch), etcd3gw's lock, members and status.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import etcd3gw
from etcd3gw import exceptions as gw_exceptions
from etcd3gw.lease import Lease

from tests.servers import run_on_etcd_and_petcd
from tests.waiting import wait_until

EVENT_WAIT_S = 15.0
SHORT_TTL_S = 2  # etcd's minimum with the default election timeout


def take(events: Iterator[dict], cancel: Callable[[], None], count: int) -> list[dict]:
    """The next `count` events of an etcd3gw watch iterator, then cancel it; fewer if the
    deadline passes first (the iterator blocks: a timer cancels it)."""
    timer = threading.Timer(EVENT_WAIT_S, cancel)
    timer.start()
    got: list[dict] = []
    try:
        for event in events:
            got.append(event)
            if len(got) == count:
                break
    finally:
        timer.cancel()
        cancel()
    return got


def watchers(host: str, port: int) -> int:
    """etcd_debugging_mvcc_watcher_total from /metrics."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return int(float(re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.M).group(1)))


class Transcript:
    """Each step's answer, or the exception it raised (class, JSON body, reason)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Any]] = []
        self._leases: dict[int, str] = {}

    def lease_name(self, lease_id: int | str) -> str:
        return self._leases.setdefault(int(lease_id), f"<lease {len(self._leases) + 1}>")

    def step(self, name: str, call: Callable[[], Any]) -> Any:
        try:
            value = call()
        except gw_exceptions.Etcd3Exception as e:
            body: Any = e.detail_text
            try:
                body = json.loads(body)
            except (TypeError, ValueError):
                pass
            self.steps.append((name, ("raised", type(e).__name__, body, e.args)))
            return None
        self.steps.append((name, self.normalize(value)))
        return value

    def normalize(self, value: Any) -> Any:
        if isinstance(value, Lease):
            return self.lease_name(value.id)
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k == "lease":
                    out[k] = self.lease_name(v)
                elif k == "clientURLs":
                    out[k] = ["<url>"] * len(v)
                else:
                    out[k] = self.normalize(v)
            return out
        if isinstance(value, (list, tuple)):
            return [self.normalize(v) for v in value]
        return value


def script(host: str, port: int) -> list[tuple[str, Any]]:
    client = etcd3gw.client(host=host, port=port, timeout=10)
    t = Transcript()
    s = t.step

    # KV: put, get, prefix get, sorted, ranges, delete
    s("put a", lambda: client.put("app/a", "1"))
    s("put b", lambda: client.put("app/b", "2"))
    s("put c", lambda: client.put("app/c", b"\x00\xff binary"))
    s("put a again", lambda: client.put("app/a", "one"))
    s("get a", lambda: client.get("app/a"))
    s("get a with metadata", lambda: client.get("app/a", metadata=True))
    s("get missing", lambda: client.get("app/missing"))
    s("get a at revision 1", lambda: client.get("app/a", revision=1))
    s("get prefix", lambda: client.get_prefix("app/"))
    s("get prefix descending by mod", lambda: client.get_prefix("app/", sort_order="descend", sort_target="mod"))
    s("get range limit 2 keys only", lambda: client.get("app/", range_end="app0", limit=2, keys_only=True, metadata=True))
    s("get range count only", lambda: client.get("app/", range_end="app0", count_only=True))  # etcd3gw: []
    s("range count only (raw)", lambda: client.post(client.get_url("/kv/range"), json={
        "key": etcd3gw.utils._encode("app/"), "range_end": etcd3gw.utils._encode("app0"), "count_only": True}))
    s("get range min mod revision", lambda: client.get("app/", range_end="app0", min_mod_revision=3, metadata=True))
    s("get all", lambda: client.get_all())
    s("delete b", lambda: client.delete("app/b"))
    s("delete b again", lambda: client.delete("app/b"))
    s("delete with prev_kv", lambda: client.delete("app/c", prev_kv=True))
    s("put x/1", lambda: client.put("x/1", "x"))
    s("put x/2", lambda: client.put("x/2", "x"))
    s("delete prefix", lambda: client.delete_prefix("x/"))
    s("get after delete prefix", lambda: client.get_prefix("x/"))

    # transactions: create-if-absent, compare-and-swap, a raw txn with both branches
    s("create new", lambda: client.create("app/created", "first"))
    s("create existing", lambda: client.create("app/created", "second"))
    s("get created", lambda: client.get("app/created"))
    s("replace matching", lambda: client.replace("app/created", "first", "third"))
    s("replace stale", lambda: client.replace("app/created", "first", "fourth"))
    s("txn success branch", lambda: client.transaction({
        "compare": [{"key": etcd3gw.utils._encode("app/created"), "result": "EQUAL", "target": "VERSION", "version": 2},
                    {"key": etcd3gw.utils._encode("app/a"), "result": "GREATER", "target": "MOD", "mod_revision": 1}],
        "success": [{"request_put": {"key": etcd3gw.utils._encode("app/t"), "value": etcd3gw.utils._encode("txn"), "prev_kv": True}},
                    {"request_range": {"key": etcd3gw.utils._encode("app/created")}},
                    {"request_delete_range": {"key": etcd3gw.utils._encode("app/a"), "prev_kv": True}}],
        "failure": [{"request_range": {"key": etcd3gw.utils._encode("app/")}}]}))
    s("txn failure branch", lambda: client.transaction({
        "compare": [{"key": etcd3gw.utils._encode("app/t"), "result": "NOT_EQUAL", "target": "VALUE", "value": etcd3gw.utils._encode("txn")}],
        "success": [{"request_put": {"key": etcd3gw.utils._encode("app/t"), "value": etcd3gw.utils._encode("never")}}],
        "failure": [{"request_range": {"key": etcd3gw.utils._encode("app/"), "range_end": etcd3gw.utils._encode("app0")}}]}))
    s("txn putting one key twice", lambda: client.transaction({
        "success": [{"request_put": {"key": etcd3gw.utils._encode("dup"), "value": etcd3gw.utils._encode("1")}},
                    {"request_put": {"key": etcd3gw.utils._encode("dup"), "value": etcd3gw.utils._encode("2")}}]}))

    # leases: grant, put with a lease, ttl, refresh, keys, revoke; an unknown lease; expiry
    lease = s("grant", lambda: client.lease(30))
    s("put with lease", lambda: client.put("app/leased", "v", lease=lease))
    s("get leased", lambda: client.get("app/leased", metadata=True))
    s("lease ttl within (0, 30]", lambda: 0 < lease.ttl() <= 30)
    s("lease refresh", lambda: lease.refresh())
    s("lease keys", lambda: sorted(lease.keys()))  # etcd lists them in Go map order
    s("create with lease", lambda: client.create("app/leased2", "w", lease=lease))
    s("lease keys after create", lambda: sorted(lease.keys()))
    s("lease revoke", lambda: lease.revoke())
    s("leased keys gone", lambda: client.get_prefix("app/leased"))
    s("revoked lease ttl", lambda: lease.ttl())
    s("revoked lease refresh", lambda: lease.refresh())
    s("revoke again", lambda: lease.revoke())
    s("put with unknown lease", lambda: client.put("app/nolease", "v", lease=Lease(123456789, client)))
    s("unknown lease ttl", lambda: Lease(123456789, client).ttl())

    # watches: from a revision (history), a live put, prefix with prev_kv and a filter, watch_once
    revision = int(client.post(client.get_url("/kv/range"), json={"key": etcd3gw.utils._encode("app/a")})["header"]["revision"])
    baseline = watchers(host, port)
    events, cancel = client.watch_prefix("app/", start_revision=1)
    s("watch history from revision 1", lambda: take(events, cancel, 8))
    events, cancel = client.watch("w/key", start_revision=revision + 1)
    s("put w/key", lambda: client.put("w/key", "watched"))
    s("watch sees the put", lambda: take(events, cancel, 1))
    events, cancel = client.watch_prefix("w/", start_revision=revision + 2, prev_kv=True, filters=["NOPUT"])
    s("put w/key again", lambda: client.put("w/key", "again"))
    s("delete w/key", lambda: client.delete("w/key"))
    s("watch prefix NOPUT with prev_kv", lambda: take(events, cancel, 1))
    # a cancelled etcd3gw watch shuts its socket down: the server drops the watcher
    s("watchers back to the baseline", lambda: wait_until(lambda: watchers(host, port) == baseline, EVENT_WAIT_S,
                                                           "the cancelled watches are dropped") and True)
    once = {}
    waiter = threading.Thread(target=lambda: once.setdefault("event", client.watch_once("w/once", timeout=EVENT_WAIT_S)))
    waiter.start()
    wait_until(lambda: watchers(host, port) > baseline, EVENT_WAIT_S, "watch_once's watch is registered")
    s("put w/once", lambda: client.put("w/once", "once"))
    waiter.join(EVENT_WAIT_S)
    s("watch_once", lambda: once.get("event"))
    s("watch_once times out", lambda: client.watch_once("w/never", timeout=0.5))
    s("watchers back to the baseline after watch_once", lambda: wait_until(
        lambda: watchers(host, port) == baseline, EVENT_WAIT_S, "watch_once's watches are dropped") and True)

    # a key on a short lease expires: its watch sees the DELETE
    short = s("grant short lease", lambda: client.lease(SHORT_TTL_S))
    s("put on short lease", lambda: client.put("exp/key", "soon gone", lease=short))
    events, cancel = client.watch("exp/key", filters=["NOPUT"])
    s("expiry deletes the key", lambda: [e["type"] for e in take(events, cancel, 1)])
    s("expired key", lambda: client.get("exp/key"))
    s("expired lease ttl", lambda: short.ttl())

    # locks: etcd3gw's own (a create-if-absent txn on a leased key)
    lock = client.lock("resource", ttl=30)
    other = client.lock("resource", ttl=30)
    s("lock acquire", lambda: lock.acquire())
    s("lock is acquired", lambda: lock.is_acquired())
    s("other lock acquire", lambda: other.acquire())
    s("other lock is not acquired", lambda: other.is_acquired())
    s("lock refresh", lambda: lock.refresh())
    s("lock release", lambda: lock.release())
    s("lock release again", lambda: lock.release())
    s("other lock acquire after release", lambda: other.acquire())
    s("other lock release", lambda: other.release())
    with client.lock("ctx", ttl=30) as held:
        s("lock as context manager", lambda: held.is_acquired())
    s("context lock released", lambda: client.get("/locks/ctx"))

    # cluster
    s("members", lambda: client.members())
    status = client.status()
    s("status", lambda: (sorted(status), status["leader"] == status["header"]["member_id"], status["header"]))
    return t.steps


def test_etcd3gw_answers_as_on_etcd():
    def run(endpoint: str, _dead: str) -> list[tuple[str, Any]]:
        host, port = endpoint.rsplit(":", 1)
        return script(host, int(port))

    (expected, _), (actual, _) = run_on_etcd_and_petcd(run, "petcd-etcd3gw-")
    differences = [f"step {step!r}: petcd answered {got!r}, etcd {want!r}"
                   for (step, want), (_, got) in zip(expected, actual) if got != want]
    assert not differences, "\n".join(differences)
    assert [s for s, _ in actual] == [s for s, _ in expected]
    # the script did what it says on etcd
    answers = dict(expected)
    assert answers["create new"] is True and answers["create existing"] is False
    assert answers["watch sees the put"][0]["kv"]["value"] == b"watched"
    assert answers["watch prefix NOPUT with prev_kv"][0]["type"] == "DELETE"
    assert answers["expiry deletes the key"] == ["DELETE"]
    assert answers["lock acquire"] is True and answers["other lock acquire"] is False
    assert answers["other lock acquire after release"] is True
    assert answers["lease keys"] == [b"app/leased"]
    assert answers["watch_once times out"][:2] == ("raised", "WatchTimedOut")
    assert answers["put with unknown lease"][2]["error"] == "etcdserver: requested lease not found"
