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
  not late   no key outlives its lease's deadline (below): no read may find the
             keys present after it (key_seen_ms), and after a revoke, not after
             revoked_ms + bound.

The deadline follows etcd's lessor (lease/lessor.go and etcdserver/server.go, v3.4.23):
  - the leader that renews a lease (applies its grant, answers a keep-alive)
    sets its expiry to now + TTL (`Lease.refresh(0)`);
  - a member that becomes leader gives every lease a fresh expiry, now + TTL +
    extend (`lessor.Promote(extend)`, which etcdserver's applyEntryNormal calls
    when the new leader applies the empty entry of its term, with extend =
    `s.Cfg.electionTimeout()`); a follower has no expiries at all (`Demote`:
    forever). So every leader change restarts every lease's countdown: under
    repeated leader changes a lease legitimately outlives its TTL for as long as
    they go on, and no bound counted from the last renewal alone holds;
  - the leader looks for expired leases every 500 ms (`runLoop`) and revokes
    them through Raft, at most leaseRevokeRate/2 = 500 per look (1000/s; and
    Promote spreads a pile of >= 1000 leases to 750 expiries a second).
So, given who led when (`leaders`: spans {member, term, from_ms, to_ms}, e.g.
the history's #petcd:leader sections), the keys of a lease last renewed at R
must be gone by

    deadline = max(R + TTL, P + TTL + extend) + bound

where P is the last promotion (a span's from_ms) before the observation, extend
the election timeout, and bound (default 2 s + one election timeout) covers the
reaper's 500 ms look, the revocation's Raft round and the client's view of it.
That much holds while the leader in office can act. A fault can stop it without
deposing it (cut off, paused or its clock slowed for less than an election
timeout, its disk full): that is time without a leader too, and since nothing
bounds how long faults go on, the deadline can only be judged from their end.
So, given when faults were active (`faults`: spans {kind, detail, from_ms,
to_ms}, the #petcd:fault sections), the deadline is also at least F +
fault_settle_ms + bound, F the last moment before the observation at which a
fault was active (fault_settle_ms: the leader's next look, which a slowed clock
stretches). A reaper that expires late or never is caught as soon as one leader
stays in office, undisturbed, for TTL + extend + bound.

Without the leaders the deadline is R + TTL + bound, which holds only while the
leader changes at most once (the election timeout in the default bound is that
one promotion's extension) and no fault stops it; under faults, pass a bound
that covers every leader change (petcd.sim.checks.lease_bound), or better, the
leaders and the faults. Either way the bound assumes fewer than 500 leases
expire at once (etcd's revoke rate limit above).

Evidence of lateness is a read that found the keys present: it saw them at some
moment between its send (key_seen_sent_ms, when recorded) and its answer
(key_seen_ms), so they were there at or after the send -- judged against the
deadline as of the answer (a promotion in between may have extended it). An
observation of the deletion (key_deleted_ms) is no such evidence when reads were
recorded: it may lag the deletion by any time (the client's member down or cut
off); it is judged late only for a lease that records no reads (no key_seen_ms),
taken then as prompt (a watch event, say). Likewise the renewal R that starts the
late deadline is taken at its answer when that is recorded (granted_answered_ms,
keepalives_answered_ms): the leader renewed the lease no later than that; and a
keep-alive never answered (keepalives_unanswered_ms: its answer may have been
lost, not its renewal) counts as a renewal up to `unanswered_ms` after its send.

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

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from petcd.sim.check.history import Op, show
from petcd.sim.check.verdict import FAIL, OK, Verdict

CHECKER = "lease"
DEFAULT_ELECTION_TIMEOUT_MS = 1000
# How long after its send a keep-alive never answered may still have renewed the lease: petcd's lease
# actor renews only when a confirmation (ReadIndex) round ends, and fails a round still open 3 s after it
# started (looked at every 500 ms): the keep-alive waits for the round in flight, then for its own, so
# 2 x 3.5 s after its arrival at the leader; plus the time its relay may wait for a paused member
# (the simulator's pauses last at most 3 s).
DEFAULT_UNANSWERED_MS = 10_000


# After a fault ends, how long a leader it held up (cut off, paused, its clock slowed) may take to look
# for expired leases again: one look, 500 ms, as stretched by the slowest clock (a timer armed while a
# clock runs slow keeps its stretched delay: sim/faults.py's stale_leader runs the leader's timers at
# rate 0.25, so 500 ms / 0.25).
DEFAULT_FAULT_SETTLE_MS = 2000


def promotions(leaders: Sequence[Mapping[str, Any]]) -> list[int]:
    """When each leader took office (its span's from_ms), in order."""
    return sorted(int(span["from_ms"]) for span in leaders)


def last_fault_before(faults: Sequence[Mapping[str, Any]], at: int) -> int | None:
    """The last moment by `at` at which a fault was active (`at` itself while one is); None: none was yet."""
    ends = [min(at, int(f["to_ms"]) if f.get("to_ms") is not None else at) for f in faults if int(f["from_ms"]) <= at]
    return max(ends) if ends else None


def check_leases(
    history: Sequence[Op],
    *,
    bound_ms: int | None = None,
    election_timeout_ms: int = DEFAULT_ELECTION_TIMEOUT_MS,
    tolerance_ms: int = 0,
    clock_rates: tuple[float, float] = (1.0, 1.0),
    leaders: Sequence[Mapping[str, Any]] | None = None,
    promotion_extend_ms: int | None = None,
    faults: Sequence[Mapping[str, Any]] | None = None,
    fault_settle_ms: int = DEFAULT_FAULT_SETTLE_MS,
    unanswered_ms: int = DEFAULT_UNANSWERED_MS,
) -> Verdict:
    """Check every "lease" op of `history`. bound_ms defaults to 2000 + election_timeout_ms.

    clock_rates = (slowest, fastest) rate of the leader's clock against the client's
    (e.g. (0.5, 2.0) when timers may be skewed that much): the lease then lasts between
    TTL / fastest and TTL / slowest of client time.
    leaders: who led when ({member, term, from_ms, to_ms}); each promotion gives every lease
    TTL + promotion_extend_ms (default: election_timeout_ms, etcd's Promote) from then on.
    faults: when faults were active ({kind, detail, from_ms, to_ms}); while one is, the leader in
    office may be unable to expire anything, and it has fault_settle_ms after the fault's end.
    """
    bound = 2000 + election_timeout_ms if bound_ms is None else bound_ms
    extend = election_timeout_ms if promotion_extend_ms is None else promotion_extend_ms
    slowest, fastest = clock_rates
    if not 0 < slowest <= fastest:
        raise ValueError(f"clock_rates must be 0 < slowest <= fastest, not {clock_rates}")
    promoted = promotions(leaders) if leaders is not None else []
    bad: list[dict[str, Any]] = []
    judged_early = judged_late = 0
    leases = [(i, op) for i, op in enumerate(history) if op.kind == "lease"]
    for i, op in leases:
        lid = op.get("lease_id")
        keys = ", ".join(show(k) for k in op.get("keys") or [])
        ttl_ms = int(float(op["ttl_s"]) * 1000)
        renewals = [int(op["granted_ms"])] + [int(t) for t in op.get("keepalives_ms") or []]
        last = max(renewals)
        # The latest the leader may have renewed it: answers when recorded, unanswered keep-alives too.
        renewed_by = [int(op.get("granted_answered_ms") or op["granted_ms"])]
        renewed_by += [int(t) for t in op.get("keepalives_answered_ms") or op.get("keepalives_ms") or []]
        renewed_by += [int(t) + unanswered_ms for t in op.get("keepalives_unanswered_ms") or []]
        last_late = max(renewed_by)
        revoked = op.get("revoked_ms")
        deleted = op.get("key_deleted_ms")
        name = f"lease {lid} ({op.process}#{op.id}, keys {keys or '-'})"

        def report(kind: str, msg: str, at: int | None) -> None:
            bad.append({"op": i, "lease_id": lid, "kind": kind, "at_ms": at, "message": f"{name}: {msg}"})

        def deadline(at: int) -> tuple[float, str]:
            """The latest the keys may be present, judged by an observation made by `at`; and why."""
            latest = last_late + ttl_ms / slowest + bound
            why = f"last renewal by {last_late} ms + TTL {ttl_ms} ms + bound {bound} ms"
            n = bisect.bisect_right(promoted, at)
            if n:
                promotion = promoted[n - 1]
                by_promotion = promotion + (ttl_ms + extend) / slowest + bound
                if by_promotion > latest:
                    latest = by_promotion
                    why = f"last leader change at {promotion} ms + TTL {ttl_ms} ms + extension {extend} ms + bound {bound} ms"
            if revoked is not None and int(revoked) + bound < latest:
                latest, why = int(revoked) + bound, f"revoked at {revoked} ms + bound {bound} ms"
            fault = last_fault_before(faults, at) if faults is not None else None
            if fault is not None and fault + fault_settle_ms + bound > latest:
                latest = fault + fault_settle_ms + bound
                why = f"a fault active until {fault} ms + {fault_settle_ms} ms to settle + bound {bound} ms"
            return latest, why

        earliest = last + ttl_ms / fastest - tolerance_ms  # the lease cannot have expired before this
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
            if op.get("key_seen_ms") is None:  # no reads: the deletion observation is the evidence
                judged_late += 1
                latest, why = deadline(deleted)
                if deleted > latest:
                    report("late", f"keys deleted only at {deleted} ms, {deleted - latest:g} ms after the deadline "
                                   f"{latest:g} ms ({why})", deleted)
        answered = [int(t) for t in op.get("key_seen_ms") or []]
        sent = [int(t) for t in op.get("key_seen_sent_ms") or []]
        if len(sent) != len(answered):
            sent = answered  # no send times recorded: take the answers as the moments seen
        if answered:
            judged_late += 1
            late = []
            for s, a in zip(sent, answered):
                latest, why = deadline(a)
                if s > latest:
                    late.append((s - latest, s, a, latest, why))
            if late:
                over, s, a, latest, why = max(late)
                seen = f"a read sent at {s} ms (answered at {a} ms)" if s != a else f"a read at {a} ms"
                report("late", f"keys still present: {seen} found them, {over:g} ms after the deadline {latest:g} ms ({why})", s)
    details: dict[str, Any] = {
        "status": FAIL if bad else OK,
        "leases": len(leases),
        "bound_ms": bound,
        "tolerance_ms": tolerance_ms,
        "clock_rates": list(clock_rates),
        "leader_changes": len(promoted) if leaders is not None else None,
        "promotion_extend_ms": extend if leaders is not None else None,
        "faults": len(faults) if faults is not None else None,
        "fault_settle_ms": fault_settle_ms if faults is not None else None,
        "judged_early": judged_early,
        "judged_late": judged_late,
        "violations": bad,
    }
    after = f"TTL + {bound} ms"
    if leaders is not None or faults is not None:
        after = ("its deadline (the last renewal" + (" or leader change" if leaders is not None else "") + " + TTL"
                 + (", or a fault's end + settling" if faults is not None else "") + f"; + {bound} ms)")
    if not bad:
        return Verdict(
            True,
            CHECKER,
            f"{len(leases)} leases: none expired early ({judged_early} judged), none outlived {after} ({judged_late} judged)",
            details,
        )
    return Verdict(False, CHECKER, f"{len(bad)} violations; first: {bad[0]['message']}", details)
