"""Under simulation: a leader cut off (its timers slow, so it believes it leads for long) must not renew
a lease the new leader is about to expire (etcd issue #15247): keep-alives wait for a ReadIndex round."""

from __future__ import annotations

from petcd.sim import checks
from petcd.sim.check.lease import check_leases
from petcd.sim.cluster import build
from petcd.sim.faults import FaultyNetwork, current_leader, skew_timers
from petcd.sim.lease_client import LeaseClient, LeaseLog


def test_a_stale_leader_does_not_renew_a_lease(tmp_path):
    members = ["m1", "m2", "m3"]
    net = FaultyNetwork(members)
    cluster = build(5, 3, str(tmp_path), net, trace=True)
    rt = cluster.runtime
    rt.run(until_ms=3000)
    leader = current_leader(rt, members)
    assert leader is not None
    log = LeaseLog("l0", lease_id=0x1EA5E, ttl_s=2, key=b"lease/0")
    client = LeaseClient(leader, log, keepalives=30)  # keep-alives go to the leader's member all along
    rt.add("l0/lease_client", lambda: client)
    assert rt.run(until=lambda: len(log.keepalives_ms) >= 2, until_ms=rt.now_ms + 10_000)
    # The stale_leader fault: cut the leader off from the other members, slow its timers.
    net.isolate(leader)
    undo = skew_timers(rt, leader, 0.25)
    others = [m for m in members if m != leader]
    stores = [rt.actor(f"{m}/apply")._store for m in others]
    key_gone = lambda: all(not s.range({"key": b"lease/0"}).get("kvs") for s in stores)  # noqa: E731
    # The others elect a leader, which expires the lease: when its revocation is applied there.
    assert rt.run(until=key_gone, until_ms=rt.now_ms + 20_000), "the new leader expired the lease"
    deleted_ms = rt.now_ms
    rt.run(until_ms=deleted_ms + 6000)  # the stale leader goes on taking keep-alives for a while
    assert current_leader(rt, others) is not None
    # No keep-alive answered as a renewal may promise the lease past the moment it was deleted.
    last_renewal = max(log.keepalives_ms)
    assert last_renewal + log.ttl_s * 1000 <= deleted_ms, (
        f"a keep-alive sent at {last_renewal} ms was answered with TTL {log.ttl_s} s, but the lease's keys were deleted at {deleted_ms} ms")
    undo()
    net.heal()
    assert rt.run(until=lambda: client.done, until_ms=rt.now_ms + 60_000)
    verdict = check_leases(checks.lease_ops([log]), bound_ms=60_000)  # late: its member was cut off when polling
    assert verdict.ok, verdict.summary
