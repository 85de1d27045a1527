"""Watch and lease guarantees on a 3-member cluster of real processes, with the leader killed mid-run."""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest

from petcd.rpc.pb import kv_pb2
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from tests.servers import Cluster, start_cluster
from tests.test_cluster import leader_index
from tests.waiting import wait_until

PREFIX = b"wk/"


@pytest.fixture
def cluster(tmp_path):
    c = start_cluster(str(tmp_path), 3)
    yield c
    c.stop()


def _kv(endpoint: str) -> pb_grpc.KVStub:
    return pb_grpc.KVStub(grpc.insecure_channel(endpoint))


class Watcher(threading.Thread):
    """A prefix watch that resumes on another member from its last revision + 1 when its member dies."""

    def __init__(self, endpoints: list[str], start_rev: int) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.next_rev = start_rev
        self.responses: list[list[tuple[int, bytes, int]]] = []  # per response: (revision, key, type)
        self.reconnects = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        attempt = 0
        while not self.stop_event.is_set() and attempt < 50:
            endpoint = self.endpoints[attempt % len(self.endpoints)]
            attempt += 1
            try:
                self._watch(endpoint)
            except grpc.RpcError:
                self.reconnects += 1
                time.sleep(0.2)

    def _watch(self, endpoint: str) -> None:
        stop = self.stop_event
        create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=PREFIX, range_end=b"wk0", start_revision=self.next_rev))

        def requests():
            yield create
            while not stop.wait(0.2):
                pass

        with grpc.insecure_channel(endpoint) as ch:
            for resp in pb_grpc.WatchStub(ch).Watch(requests()):
                if resp.canceled:
                    raise AssertionError(f"watch canceled: {resp.cancel_reason}")
                if resp.events:
                    self.responses.append([(ev.kv.mod_revision, ev.kv.key, ev.type) for ev in resp.events])
                    self.next_rev = resp.events[-1].kv.mod_revision + 1
                if stop.is_set():
                    return

    def events(self) -> list[tuple[int, bytes, int]]:
        return [e for r in self.responses for e in r]


def _writer(endpoints: list[str], wid: int, stop: threading.Event, acked: list[int]) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        txn = pb.TxnRequest(success=[
            pb.RequestOp(request_put=pb.PutRequest(key=PREFIX + f"a/{wid}/{i:05d}".encode(), value=b"1")),
            pb.RequestOp(request_put=pb.PutRequest(key=PREFIX + f"b/{wid}/{i:05d}".encode(), value=b"2")),
        ])
        for endpoint in endpoints:
            try:
                acked.append(_kv(endpoint).Txn(txn, timeout=3).header.revision)
                break
            except grpc.RpcError:
                continue


def test_watch_guarantees_across_a_leader_kill(cluster: Cluster):
    endpoints = [m.endpoint for m in cluster.members]
    lead = leader_index(cluster)
    # One watcher starting on each member (on the leader too: it must resume elsewhere), from revision 1.
    watchers = [Watcher(endpoints[i:] + endpoints[:i], 1) for i in range(3)]
    for w in watchers:
        w.start()
    stop = threading.Event()
    acked: list[list[int]] = [[], []]
    survivors = [e for i, e in enumerate(endpoints) if i != lead]
    writers = [threading.Thread(target=_writer, args=(survivors, w, stop, acked[w])) for w in range(2)]
    for t in writers:
        t.start()
    # Load before the kill and after it (each Txn writes two keys: 40 events at least in all).
    wait_until(lambda: sum(map(len, acked)) >= 10, 30, "10 transactions are acknowledged before the kill")
    os.killpg(cluster.members[lead].proc.pid, signal.SIGKILL)
    before_kill = sum(map(len, acked))
    wait_until(lambda: sum(map(len, acked)) >= before_kill + 10, 30, "10 more transactions are acknowledged after the kill")
    stop.set()
    for t in writers:
        t.join()
    # The committed history: every key was written once, so the final state lists every put.
    final = _kv(survivors[0]).Range(pb.RangeRequest(key=PREFIX, range_end=b"wk0"), timeout=5)
    last_rev = final.header.revision
    expected = sorted(((kv.mod_revision, kv.key, 0) for kv in final.kvs), key=lambda e: (e[0], e[1]))  # a/.. before b/..
    assert len(expected) >= 40 and all(r in {e[0] for e in expected} for a in acked for r in a)
    wait_until(lambda: all(w.next_rev > last_rev for w in watchers), 20, "every watcher has seen the last revision")
    for w in watchers:
        w.stop_event.set()
    for i, w in enumerate(watchers):
        got = w.events()
        assert got == expected, f"watcher {i} (reconnects {w.reconnects}): ordered, unique and reliable"
        for resp in w.responses:  # atomic: a revision's events never straddle two responses
            revs = {r for r, _, _ in resp}
            for other in w.responses:
                if other is not resp:
                    assert not revs & {r for r, _, _ in other}
    assert watchers[lead].reconnects >= 1, "the watcher on the killed leader resumed on another member"
    print(f"\n{len(expected)} events seen identically by 3 watchers; leader's watcher reconnected {watchers[lead].reconnects}x")


def test_lease_expiry_deletes_keys_in_one_revision_and_follows_keepalives(cluster: Cluster):
    lead = leader_index(cluster)
    follower = cluster.members[(lead + 1) % 3].endpoint
    with grpc.insecure_channel(follower) as ch:
        lease = pb_grpc.LeaseStub(ch)
        kv = pb_grpc.KVStub(ch)
        short = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=2), timeout=5)
        assert short.TTL == 2
        for k in (b"l/1", b"l/2", b"l/3"):
            kv.Put(pb.PutRequest(key=k, value=b"v", lease=short.ID), timeout=5)
        kept = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=3), timeout=5)
        kv.Put(pb.PutRequest(key=b"kept", value=b"v", lease=kept.ID), timeout=5)
        start_rev = kv.Range(pb.RangeRequest(key=b"l/"), timeout=5).header.revision + 1

        # Keep `kept` alive through the follower for longer than its TTL; `short` expires meanwhile.
        def keepalives():
            for _ in range(14):
                yield pb.LeaseKeepAliveRequest(ID=kept.ID)
                time.sleep(0.5)

        ttls = [r.TTL for r in lease.LeaseKeepAlive(keepalives(), timeout=20)]
        assert ttls and all(t == 3 for t in ttls), ttls
        assert kv.Range(pb.RangeRequest(key=b"kept"), timeout=5).count == 1, "kept alive through a follower"
        wait_until(lambda: kv.Range(pb.RangeRequest(key=b"l/", range_end=b"l0"), timeout=5).count == 0, 10,
                   "the short lease expired and took its keys")
        history = kv.Range(pb.RangeRequest(key=b"l/", range_end=b"l0", revision=start_rev - 1), timeout=5)
        assert history.count == 3
        # One revision deleted all three keys: a watch from before shows three DELETEs at one revision.
        create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"l/", range_end=b"l0", start_revision=start_rev))
        stream = pb_grpc.WatchStub(ch).Watch(iter([create]), timeout=5)
        deletes = []
        for resp in stream:
            deletes += [(ev.type, ev.kv.mod_revision) for ev in resp.events]
            if len(deletes) >= 3:
                break
        stream.cancel()
        assert [t for t, _ in deletes] == [kv_pb2.Event.DELETE] * 3
        assert len({r for _, r in deletes}) == 1
        ttl = lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=short.ID), timeout=5)
        assert ttl.TTL == -1
        with pytest.raises(grpc.RpcError) as err:
            lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=short.ID), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and err.value.details() == "etcdserver: requested lease not found"


def test_no_lease_expires_early_across_a_leader_change(cluster: Cluster):
    lead = leader_index(cluster)
    others = [m.endpoint for i, m in enumerate(cluster.members) if i != lead]
    with grpc.insecure_channel(others[0]) as ch:
        lease, kv = pb_grpc.LeaseStub(ch), pb_grpc.KVStub(ch)
        grant = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=4), timeout=5)
        kv.Put(pb.PutRequest(key=b"guarded", value=b"v", lease=grant.ID), timeout=5)
        renewed_at = time.monotonic()
        list(lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=grant.ID)]), timeout=5))
        os.killpg(cluster.members[lead].proc.pid, signal.SIGKILL)
        # Until the TTL has passed since the last renewal, the key must be there, whoever leads.
        while time.monotonic() < renewed_at + 3.8:
            try:
                assert kv.Range(pb.RangeRequest(key=b"guarded", serializable=True), timeout=2).count == 1, "expired early"
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        # And it does expire once the new leader's full TTL has run out (bounded).
        wait_until(lambda: kv.Range(pb.RangeRequest(key=b"guarded", serializable=True), timeout=2).count == 0, 15,
                   "the lease expires under the new leader")
