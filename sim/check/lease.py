"""Lease guarantees, checked on the observed facts of each lease.

For each "lease" op (see history.py): the lease was granted with TTL ttl_s,
renewed by the grant (granted_ms) and by every keepalive answered with TTL > 0
(keepalives_ms, the times they were sent); the last renewal R is the latest
of these. Two properties:

  not early  the keys must not be deleted before the lease could have expired:
             a deletion observed at key_deleted_ms < R + TTL (less `tolerance_ms`)
             is a violation -- unless the lease was revoked (revoked_ms) before
             that observation. A keepalive answered after the keys were deleted is
             the same violation (the lease was still alive), and it is caught by
             the same rule since it makes R later.
  not late   no key outlives its lease by more than a bound: the deletion must be
             observed by R + TTL + bound (and by revoked_ms + bound after a
             revoke), and no read may find the keys present later (key_seen_ms).
             bound defaults to 2 s + one election timeout: a new leader extends
             every lease by up to an election timeout (etcd refreshes leases on
             promotion), and the expiry itself takes a Raft round trip plus the
             reaper's tick.

Times are the client's clock. Renewals are taken at the time the request was
*sent*: the leader renewed the lease later than that, so "early" is judged
against a lower bound of the true expiry -- sound as long as the client's and
the leader's clocks advance at the same rate; when they may not (a skewed
clock), pass clock_rates = (slowest, fastest) rate of the leader's clock
against the client's -- a leader whose clock runs twice as fast really does
expire leases after half the TTL. If renewals were recorded when the answer
arrived instead, pass tolerance_ms = the round-trip time. A lease whose
deletion was never observed (and no key_seen_ms) cannot be judged late.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from petcd.sim.check.history import Op, show
from petcd.sim.check.verdict import FAIL, OK, Verdict

CHECKER = "lease"
DEFAULT_ELECTION_TIMEOUT_MS = 1000


def check_leases(
    history: Sequence[Op],
    *,
    bound_ms: int | None = None,
    election_timeout_ms: int = DEFAULT_ELECTION_TIMEOUT_MS,
    tolerance_ms: int = 0,
    clock_rates: tuple[float, float] = (1.0, 1.0),
) -> Verdict:
    """Check every "lease" op of `history`. bound_ms defaults to 2000 + election_timeout_ms.

    clock_rates = (slowest, fastest) rate of the leader's clock against the client's
    (e.g. (0.5, 2.0) when timers may be skewed that much): the lease then lasts between
    TTL / fastest and TTL / slowest of client time.
    """
    bound = 2000 + election_timeout_ms if bound_ms is None else bound_ms
    slowest, fastest = clock_rates
    if not 0 < slowest <= fastest:
        raise ValueError(f"clock_rates must be 0 < slowest <= fastest, not {clock_rates}")
    bad: list[dict[str, Any]] = []
    judged_early = judged_late = 0
    leases = [(i, op) for i, op in enumerate(history) if op.kind == "lease"]
    for i, op in leases:
        lid = op.get("lease_id")
        keys = ", ".join(show(k) for k in op.get("keys") or [])
        ttl_ms = int(float(op["ttl_s"]) * 1000)
        renewals = [int(op["granted_ms"])] + [int(t) for t in op.get("keepalives_ms") or []]
        last = max(renewals)
        revoked = op.get("revoked_ms")
        deleted = op.get("key_deleted_ms")
        name = f"lease {lid} ({op.process}#{op.id}, keys {keys or '-'})"

        def report(kind: str, msg: str, at: int | None) -> None:
            bad.append({"op": i, "lease_id": lid, "kind": kind, "at_ms": at, "message": f"{name}: {msg}"})

        earliest = last + ttl_ms / fastest - tolerance_ms  # the lease cannot have expired before this
        latest = last + ttl_ms / slowest + bound  # the keys must be gone by this
        if revoked is not None:
            latest = min(latest, int(revoked) + bound)
        if deleted is not None:
            deleted = int(deleted)
            judged_early += 1
            if deleted < earliest and (revoked is None or deleted < int(revoked)):
                after = [t for t in renewals if t > deleted]
                why = (
                    f"a keepalive sent at {after[0]} ms was still answered"
                    if after
                    else f"the last renewal was at {last} ms with TTL {ttl_ms} ms"
                )
                report(
                    "early",
                    f"keys deleted (observed at {deleted} ms, revision {op.get('key_deleted_revision')}) before "
                    f"the lease could expire at {earliest:g} ms: {why}",
                    deleted,
                )
            judged_late += 1
            if deleted > latest:
                report(
                    "late",
                    f"keys deleted only at {deleted} ms, {deleted - latest:g} ms after the deadline {latest:g} ms "
                    f"(last renewal {last} ms + TTL {ttl_ms} ms + bound {bound} ms"
                    + (f"; revoked at {revoked} ms" if revoked is not None else "")
                    + ")",
                    deleted,
                )
        seen = [int(t) for t in op.get("key_seen_ms") or []]
        if seen:
            judged_late += 1
            late = [t for t in seen if t > latest]
            if late:
                report(
                    "late",
                    f"keys still present at {max(late)} ms, {max(late) - latest:g} ms after the deadline {latest:g} ms "
                    f"(last renewal {last} ms + TTL {ttl_ms} ms + bound {bound} ms)",
                    max(late),
                )
    details: dict[str, Any] = {
        "status": FAIL if bad else OK,
        "leases": len(leases),
        "bound_ms": bound,
        "tolerance_ms": tolerance_ms,
        "clock_rates": list(clock_rates),
        "judged_early": judged_early,
        "judged_late": judged_late,
        "violations": bad,
    }
    if not bad:
        return Verdict(
            True,
            CHECKER,
            f"{len(leases)} leases: none expired early ({judged_early} judged), none outlived TTL + {bound} ms ({judged_late} judged)",
            details,
        )
    return Verdict(False, CHECKER, f"{len(bad)} violations; first: {bad[0]['message']}", details)
