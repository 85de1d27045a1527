"""The space quota (etcd's --quota-backend-bytes), the NOSPACE alarm, Defragment and auto-compaction.

The same steps run against petcd and real etcd 3.4 (the real etcdctl and gRPC) and their outcomes,
normalised for member ids, ports and counts, must be equal: fill the quota, see the refusal and the
alarm, check what still works (reads, deletes, compaction, read-only txns), defragment, disarm,
write again. A 3-member cluster keeps the alarm on a member restarted while it is raised. A store
whose LMDB map fills up fails the entry that does not fit (NOSPACE) instead of dying on it.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from typing import Any

import grpc
import pytest

import msgpack

from petcd.actors.apply_actor import ApplyActor, ApplyConfig
from petcd.actors.lease_actor import LeaseActor, LeaseConfig
from petcd.rpc.config import ConfigError, parse
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.store.disk import LocalDisk
from petcd.store.mvcc import ALARM_NOSPACE, MapFull, MvccStore, map_size_for_quota
from tests.waiting import wait_until
from tests.servers import etcd_binary, grpc_outcome, restart, start_cluster, start_etcd, start_petcd, wait_ready

QUOTA = str(1 << 20)
FILL_VALUE = b"x" * 100_000
MAX_FILL_PUTS = 500
NOSPACE = "etcdserver: mvcc: database space exceeded"


def ctl(endpoint: str, *args: str) -> tuple[int, str]:
    """etcdctl's exit code and output (stdout, else the error line), ids, ports and numbers masked."""
    out = subprocess.run([etcd_binary("etcdctl"), "--endpoints", endpoint, "--command-timeout=10s", *args],
                         capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
    text = out.stdout if out.returncode == 0 else next((ln for ln in out.stderr.splitlines() if ln.startswith("Error:")), out.stderr)
    text = re.sub(r"memberID:\d+", "memberID:<id>", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "<endpoint>", text)
    return out.returncode, re.sub(r"compacted revision \d+", "compacted revision <n>", text).strip()


def fill(endpoint: str) -> str:
    """Puts of 100 kB until refused; the refusal."""
    with grpc.insecure_channel(endpoint) as ch:
        kv = pb_grpc.KVStub(ch)
        for i in range(MAX_FILL_PUTS):
            outcome = grpc_outcome(lambda: kv.Put(pb.PutRequest(key=b"fill/%d" % i, value=FILL_VALUE), timeout=10))
            if outcome != "OK":
                return outcome
    raise AssertionError(f"{MAX_FILL_PUTS} puts of 100 kB did not exhaust a {QUOTA}-byte quota")


def quota_steps(endpoint: str) -> list[tuple[str, Any]]:
    ch = grpc.insecure_channel(endpoint)
    kv, lease = pb_grpc.KVStub(ch), pb_grpc.LeaseStub(ch)
    put_in_failure = pb.TxnRequest(compare=[pb.Compare(key=b"nokey", target=pb.Compare.VERSION, result=pb.Compare.EQUAL, version=1)],
                                   failure=[pb.RequestOp(request_put=pb.PutRequest(key=b"a", value=b"b"))])
    read_only = pb.TxnRequest(success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"fill/1"))])
    steps: list[tuple[str, Any]] = [("fill", fill(endpoint))]
    steps += [
        ("alarm list", ctl(endpoint, "alarm", "list")),
        ("put", ctl(endpoint, "put", "small", "v")),
        ("lease grant", grpc_outcome(lambda: lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60), timeout=10))),
        ("txn with a put", grpc_outcome(lambda: kv.Txn(put_in_failure, timeout=10))),
        ("read-only txn", grpc_outcome(lambda: kv.Txn(read_only, timeout=10))),
        ("get", ctl(endpoint, "get", "fill/1", "--keys-only")),
        ("delete", grpc_outcome(lambda: kv.DeleteRange(pb.DeleteRangeRequest(key=b"fill/", range_end=b"fill0"), timeout=10))),
    ]
    revision = kv.Range(pb.RangeRequest(key=b"a"), timeout=10).header.revision
    steps += [
        ("compact", ctl(endpoint, "compact", str(revision), "--physical")),
        ("alarm list after compaction", ctl(endpoint, "alarm", "list")),
        ("put after compaction", ctl(endpoint, "put", "small", "v")),
        ("defrag", ctl(endpoint, "defrag")),
        ("alarm disarm", ctl(endpoint, "alarm", "disarm")),
        ("alarm list after disarm", ctl(endpoint, "alarm", "list")),
        ("put after disarm", ctl(endpoint, "put", "small", "v")),
        ("lease grant after disarm", grpc_outcome(lambda: lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60), timeout=10))),
        ("get after disarm", ctl(endpoint, "get", "small", "--print-value-only")),
    ]
    ch.close()
    return steps


EXPECTED = [
    ("fill", f"RESOURCE_EXHAUSTED: {NOSPACE}"),
    ("alarm list", (0, "memberID:<id> alarm:NOSPACE")),
    ("put", (1, f"Error: {NOSPACE}")),
    ("lease grant", f"RESOURCE_EXHAUSTED: {NOSPACE}"),
    ("txn with a put", f"RESOURCE_EXHAUSTED: {NOSPACE}"),
    ("read-only txn", "OK"),
    ("get", (0, "fill/1")),
    ("delete", "OK"),
    ("compact", (0, "compacted revision <n>")),
    ("alarm list after compaction", (0, "memberID:<id> alarm:NOSPACE")),
    ("put after compaction", (1, f"Error: {NOSPACE}")),
    ("defrag", (0, "Finished defragmenting etcd member[<endpoint>]")),
    ("alarm disarm", (0, "memberID:<id> alarm:NOSPACE")),
    ("alarm list after disarm", (0, "")),
    ("put after disarm", (0, "OK")),
    ("lease grant after disarm", "OK"),
    ("get after disarm", (0, "v")),
]


@pytest.mark.parametrize("server", ["petcd", "etcd"])
def test_quota_alarm_defragment_disarm_as_etcd(tmp_path, server):
    start = start_petcd if server == "petcd" else start_etcd
    s = start(str(tmp_path / "d"), "--quota-backend-bytes", QUOTA)
    try:
        steps = quota_steps(s.endpoint)
        assert s.proc.poll() is None, "the member is still running"
    finally:
        s.stop()
    assert steps == EXPECTED


def _member_status(endpoint: str) -> pb.StatusResponse:
    with grpc.insecure_channel(endpoint) as ch:
        return pb_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=5)


def _nospace_only(errors: Any) -> bool:
    return bool(errors) and all(re.fullmatch(r"memberID:\d+ alarm:NOSPACE ", e) for e in errors)


@pytest.mark.parametrize("server", ["petcd", "etcd"])
def test_cluster_member_restarted_under_the_alarm_keeps_it(tmp_path, server):
    cluster = start_cluster(str(tmp_path), 3, "--quota-backend-bytes", QUOTA, server=server)
    try:
        first, third = cluster.members[0], cluster.members[2]
        assert fill(first.endpoint) == f"RESOURCE_EXHAUSTED: {NOSPACE}"
        raiser = _member_status(first.endpoint).header.member_id
        alarm = f"memberID:{raiser} alarm:NOSPACE "
        # petcd: only the member that saw the quota passed raised it, once, and every member holds it.
        # (Real etcd may hold more NOSPACE alarms, raised by other members, and not the same on every
        # member at once: a member whose apply meets an entry refused for space before it applied the
        # alarm raises one under its own id, e.g. when replaying its log after a restart.)
        for m in cluster.members:
            if server == "petcd":
                wait_until(lambda: list(_member_status(m.endpoint).errors) == [alarm], 20, f"the alarm on {m.endpoint}")
            else:
                wait_until(lambda: _nospace_only(_member_status(m.endpoint).errors), 20, f"the alarm on {m.endpoint}")
        for m in cluster.members:
            code, listed = ctl(m.endpoint, "alarm", "list")
            assert code == 0 and {ln.strip() for ln in listed.splitlines()} == {"memberID:<id> alarm:NOSPACE"}
        third.stop()
        cluster.members[2] = third = restart(third)
        wait_ready(third)
        errors = list(_member_status(third.endpoint).errors)
        if server == "petcd":
            assert errors == [alarm], "the alarm survived the restart"
        else:
            assert _nospace_only(errors), errors
        assert ctl(third.endpoint, "put", "small", "v") == (1, f"Error: {NOSPACE}")
        with grpc.insecure_channel(third.endpoint) as ch:
            kv = pb_grpc.KVStub(ch)
            kv.DeleteRange(pb.DeleteRangeRequest(key=b"fill/", range_end=b"fill0"), timeout=10)
            revision = kv.Range(pb.RangeRequest(key=b"a"), timeout=10).header.revision
        assert ctl(third.endpoint, "compact", str(revision))[0] == 0
        assert ctl(cluster.endpoints(), "defrag", "--cluster")[0] == 0
        code, disarmed = ctl(third.endpoint, "alarm", "disarm")
        assert code == 0 and {ln.strip() for ln in disarmed.splitlines()} == {"memberID:<id> alarm:NOSPACE"}
        assert ctl(third.endpoint, "put", "small", "v") == (0, "OK")
        for m in cluster.members:
            wait_until(lambda: list(_member_status(m.endpoint).errors) == [], 20, f"the alarm gone on {m.endpoint}")
        assert all(m.proc.poll() is None for m in cluster.members), "no member died"
    finally:
        cluster.stop()


# ---------------------------------------------------------------------- the apply path never dies


def test_writes_in_flight_past_the_quota_are_refused_at_apply_and_the_member_lives(tmp_path):
    """Many clients at once: their puts pass the gateway's check together, and the apply actor
    refuses those past the quota (raising the alarm) instead of letting them fill the store."""
    s = start_petcd(str(tmp_path / "d"), "--quota-backend-bytes", QUOTA)
    try:
        outcomes: list[str] = []

        def writer(w: int) -> None:
            with grpc.insecure_channel(s.endpoint) as ch:
                kv = pb_grpc.KVStub(ch)
                for i in range(40):
                    outcome = grpc_outcome(lambda: kv.Put(pb.PutRequest(key=b"w%d/%d" % (w, i), value=FILL_VALUE), timeout=10))
                    outcomes.append(outcome)
                    if outcome != "OK":
                        return

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(outcomes) == {"OK", f"RESOURCE_EXHAUSTED: {NOSPACE}"}
        assert outcomes.count("OK") * len(FILL_VALUE) < 2 * int(QUOTA), "the store stopped near the quota"
        assert s.proc.poll() is None, "the member is still running"
        assert ctl(s.endpoint, "alarm", "list") == (0, "memberID:<id> alarm:NOSPACE")
        assert _member_status(s.endpoint).dbSize < map_size_for_quota(int(QUOTA))
    finally:
        s.stop()


def test_an_entry_that_does_not_fit_the_map_stops_the_store_and_applies_after_a_restart(tmp_path):
    """The LMDB map is one member's matter, not the log's: a batch that does not fit is not applied
    (recording it as failed on this member alone would make members differ); MapFull stops the
    member, and with a larger map the same entry applies."""
    store = MvccStore(str(tmp_path / "s"), sync=False, map_size_bytes=1 << 20)
    index = 0
    with pytest.raises(MapFull):
        while index < 1000:
            index += 1
            store.apply([(index, {"op": "put", "key": b"k%d" % index, "value": b"x" * 3000, "alarm_member": 7})])
    assert store.applied_index() == index - 1, "nothing of the batch that did not fit is applied"
    assert store.alarms() == [], "no member-local alarm either"
    store.close()
    bigger = MvccStore(str(tmp_path / "s"), sync=False, map_size_bytes=1 << 22)
    [resp] = bigger.apply([(index, {"op": "put", "key": b"k%d" % index, "value": b"x" * 3000})])
    assert "error" not in resp and bigger.applied_index() == index
    bigger.close()


def test_the_apply_actor_stops_its_member_on_a_full_map_and_resumes_at_the_entry(tmp_path):
    config = ApplyConfig("m1", str(tmp_path), sync=False, map_size_bytes=1 << 20)

    def entry(index: int, key: bytes) -> list:
        data = {"req": {"op": "put", "key": key, "value": b"x" * 3000}, "origin": ["m1/gw0", index], "member": "m1"}
        return [index, 1, msgpack.packb(data)]

    actor, ctx = ApplyActor(config), _Ctx()
    actor.start(ctx)
    index = 0
    while not ctx.stopped and index < 1000:
        index += 1
        actor.receive(ctx, [("m1/raft", {"t": "apply", "entries": [entry(index, b"k%d" % index)]})])
    assert ctx.stopped == [True], "the member stops, as a failure"
    assert not [m for to, m in ctx.sent if to == "m1/gw0" and m["id"] == index], "the entry is not answered"
    actor.stop()
    restarted, ctx = ApplyActor(ApplyConfig("m1", str(tmp_path), sync=False, map_size_bytes=1 << 22)), _Ctx()
    restarted.start(ctx)
    assert ctx.sent[0][1]["applied"] == index - 1, "replay starts at the entry that did not fit"
    restarted.receive(ctx, [("m1/raft", {"t": "apply", "entries": [entry(index, b"k%d" % index)]})])
    assert [m["resp"].get("error") for to, m in ctx.sent if to == "m1/gw0"] == [None]
    restarted.stop()


def test_the_quota_is_decided_from_the_store_alone_and_leaves_room_for_deletes(tmp_path):
    """Two members applying the same log decide the same; after the refusal, deletes, compaction,
    alarm changes and lease revocations fit the map sized from the quota."""
    quota = 200_000
    log: list[tuple[int, dict]] = [(1, {"op": "lease_grant", "ID": 5, "TTL": 60, "quota": quota, "alarm_member": 9})]
    log += [(i, {"op": "put", "key": b"k%d" % i, "value": b"y" * 20_000, "lease": 5, "quota": quota, "alarm_member": 9})
            for i in range(2, 20)]
    log += [(20, {"op": "delete_range", "key": b"k", "range_end": b"l"}), (21, {"op": "compact", "revision": 11}),
            (22, {"op": "lease_revoke", "ID": 5}), (23, {"op": "put", "key": b"z", "value": b"1", "quota": quota}),
            (24, {"op": "alarm", "action": 2, "memberID": 9, "alarm": ALARM_NOSPACE}),
            (25, {"op": "put", "key": b"z", "value": b"1", "quota": quota})]
    outcomes, digests = [], []
    for name in ("a", "b"):
        store = MvccStore(str(tmp_path / name), sync=False, map_size_bytes=map_size_for_quota(quota))
        outcomes.append([store.apply([entry])[0] for entry in log[:10]] + store.apply(log[10:]))
        digests.append(store.digest())
        store.close()
    assert outcomes[0] == outcomes[1] and digests[0] == digests[1]
    errors = [r.get("error") for r in outcomes[0]]
    first_refused = errors.index("no_space")
    assert 2 < first_refused < 19 and all(e == "no_space" for e in errors[first_refused:19]), errors
    assert errors[19:22] == [None, None, None], "delete, compaction and revocation work while the alarm is raised"
    assert errors[22] == "no_space" and outcomes[0][23]["alarms"] == [{"memberID": 9, "alarm": ALARM_NOSPACE}]
    assert errors[24] is None, "the quota has room again once the alarm is disarmed"


# ---------------------------------------------------------------------- auto-compaction


def _compact_revision(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as ch:
        return pb_grpc.MaintenanceStub(ch).HashKV(pb.HashKVRequest(revision=0), timeout=5).compact_revision


@pytest.mark.parametrize("server", ["petcd", "etcd"])
def test_periodic_auto_compaction(tmp_path, server):
    start = start_petcd if server == "petcd" else start_etcd
    s = start(str(tmp_path / "d"), "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s")
    try:
        with grpc.insecure_channel(s.endpoint) as ch:
            kv = pb_grpc.KVStub(ch)

            def advanced() -> int:
                kv.Put(pb.PutRequest(key=b"k", value=b"v"), timeout=5)
                return _compact_revision(s.endpoint) > 1

            wait_until(advanced, 15, "the compacted revision to advance")
            current = kv.Range(pb.RangeRequest(key=b"k"), timeout=5).header.revision
        compacted = _compact_revision(s.endpoint)
        assert compacted < current, "the revisions of the last retention window are kept"
    finally:
        s.stop()


class _Ctx:
    """Just enough of actors.actor.Context for the lease actor's compactor."""

    def __init__(self) -> None:
        self.now, self.sent, self.timers, self.logged, self.stopped = 0, [], {}, [], []
        self.address = "m1/lease"
        self.disk = LocalDisk()

    def send(self, to: str, msg: dict) -> None:
        self.sent.append((to, msg))

    def set_timer(self, name: str, delay_ms: int) -> None:
        self.timers[name] = delay_ms

    def now_ms(self) -> int:
        return self.now

    def random(self) -> float:
        return 0.5

    def log(self, level: str, msg: str, **fields: Any) -> None:
        self.logged.append((level, msg))

    def stop_member(self, reason: str, failed: bool = False) -> None:
        self.stopped.append(failed)


def test_revision_auto_compaction_every_five_minutes_on_the_leader_only():
    actor, ctx = LeaseActor(LeaseConfig("m1", "revision", 100)), _Ctx()
    actor.start(ctx)
    assert ctx.timers["compact"] == 5 * 60_000

    def tick(revision: int, leader: bool) -> list[dict]:
        actor.receive(ctx, [("m1/raft", {"t": "leader", "is_leader": leader, "leader": "m1" if leader else "m2", "term": 2})])
        ctx.sent.clear()
        actor.on_timer(ctx, "compact")
        assert ctx.sent == [("m1/apply", {"t": "revision"})]
        ctx.sent.clear()
        actor.receive(ctx, [("m1/apply", {"t": "revision", "revision": revision})])
        return [m for _, m in ctx.sent if m.get("t") == "propose"]

    assert tick(1000, leader=False) == [], "only the leader compacts"
    assert tick(50, leader=True) == [], "nothing to compact below the retention"
    (proposal,) = tick(1000, leader=True)
    assert proposal["req"] == {"op": "compact", "revision": 900}
    actor.receive(ctx, [("m1/raft", {"t": "resp", "id": proposal["origin"][1], "resp": {"revision": 1000}})])
    assert tick(1000, leader=True) == [], "not the same revision twice"


def test_auto_compaction_flags_as_etcd():
    base = ["--name", "n"]
    assert parse([*base, "--auto-compaction-retention", "1"], {}).auto_compaction() == ("periodic", 3_600_000)
    assert parse([*base, "--auto-compaction-retention", "30m"], {}).auto_compaction() == ("periodic", 1_800_000)
    assert parse([*base, "--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000"], {}).auto_compaction() == ("revision", 1000)
    assert parse([*base], {"ETCD_AUTO_COMPACTION_RETENTION": "2h"}).auto_compaction() == ("periodic", 7_200_000)
    with pytest.raises(ConfigError):
        parse([*base, "--auto-compaction-mode", "daily"], {})
    with pytest.raises(ConfigError):
        parse([*base, "--auto-compaction-retention", "soon"], {})
