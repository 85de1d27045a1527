"""Membership changes: their encoding in the log, etcd's safety checks, and their effect on the member table.

A change is a dict: {"op": "add_voter" | "add_learner" | "promote" | "remove" | "update" | "attrs",
"id": member id, "name", "peer_urls", "client_urls"}. "update" changes peer URLs; "attrs" is
a member publishing its name and client URLs once it runs (etcd does the same). The member table maps
id -> {"name", "peer_urls", "client_urls"}.
"""

from __future__ import annotations

from typing import Any

import msgpack

from petcd.actors.raft import LEADER, RaftCore

MAX_LEARNERS = 1  # etcd's --max-learners default
# A learner is "in sync" when it holds this share of the leader's log (etcd's rule).
LEARNER_SYNC_RATIO = 0.9

Change = dict[str, Any]
Members = dict[str, dict[str, Any]]
# A removed member stays in the table as a tombstone: its id is never reused, and a removed
# member that still talks is told so (and stops), as etcd does.
REMOVED = {"removed": True}


def active(members: Members) -> Members:
    return {mid: info for mid, info in members.items() if not info.get("removed")}


def is_removed(members: Members, member: str) -> bool:
    return bool(members.get(member, {}).get("removed"))


def encode_change(change: Change, origin: list[Any] | None = None, member: str | None = None) -> bytes:
    data: dict[str, Any] = {"conf": change}
    if origin is not None:
        data["origin"], data["member"] = origin, member
    return msgpack.packb(data)


def decode_change(data: bytes) -> Change:
    change = msgpack.unpackb(data)["conf"]
    assert change["op"] in ("add_voter", "add_learner", "promote", "remove", "update", "attrs"), change
    return change


def check(change: Change, core: RaftCore, members: Members, activity: PeerActivity | None = None, now_ms: int = 0) -> str | None:
    """etcd 3.4's checks on a membership change (its --strict-reconfig-check, on by default), made by
    the leader; an error name or None. In etcd's order: the health checks of mayAddMember,
    mayRemoveMember and mayPromoteMember first, then those etcd makes when the change applies.

    "Started" is etcd's Member.IsStarted: the member has a name (one from --initial-cluster, or
    one it published once it ran). "Connected" is what the leader heard from a peer lately
    (`activity`); etcd asks its peer transport whether the peer is connected."""
    assert core.role == LEADER
    if activity is not None:
        activity.observe(core, now_ms)  # up to date even before the first tick of a new leadership
    op, mid = change["op"], change["id"]
    voters = list(core.conf.voters)
    if op in ("add_voter", "add_learner"):
        if op == "add_voter" and not _ready_to_add_voter(voters, members):
            return "not_enough_started"
        if _connected(core, voters, activity, now_ms) < len(voters):
            return "unhealthy_cluster"
        if _urls_taken(change["peer_urls"], members, except_id=None):
            return "peer_urls_exist"
        if mid in members:
            return "member_id_exists"
        if op == "add_learner" and len(core.conf.learners) >= MAX_LEARNERS:
            return "too_many_learners"
        return None
    if op == "promote":
        # isLearnerReady: on the leader, against any member it has a progress for.
        pr = core.progress.get(mid)
        if pr is not None and mid != core.id and pr.match < core.progress[core.id].match * LEARNER_SYNC_RATIO:
            return "learner_not_ready"
        if not _ready_to_promote(voters, members):
            return "not_enough_started"
    if op == "remove" and mid in voters:
        if not _ready_to_remove_voter(voters, members, mid):
            return "not_enough_started"
        # A member that is down is not part of the active quorum: removing it is safe.
        down = mid != core.id and _connected(core, [mid], activity, now_ms) == 0
        if not down and _connected(core, voters, activity, now_ms) - 1 < 1 + (len(voters) - 1) // 2:
            return "unhealthy_cluster"
    if mid not in active(members):
        return "member_not_found"
    if op == "update":
        return "peer_urls_exist" if _urls_taken(change["peer_urls"], members, except_id=mid) else None
    if op == "promote" and mid not in core.conf.learners:
        return "not_learner"
    return None


def leaderless_error(change: Change, voters: tuple[str, ...] | list[str], members: Members) -> str:
    """The answer to a change taken while no leader is known. etcd checks on the member that takes
    the change, in check's order: the started voters first, then (for an add) the connections;
    with no leader some voter is not connected, so an add is refused as unhealthy."""
    op = change["op"]
    if op == "add_voter" and not _ready_to_add_voter(list(voters), members):
        return "not_enough_started"
    if op in ("add_voter", "add_learner"):
        return "unhealthy_cluster"
    if op == "remove" and change["id"] in voters and not _ready_to_remove_voter(list(voters), members, change["id"]):
        return "not_enough_started"
    return "no_leader"


class PeerActivity:
    """When the leader last heard from each peer, observed every tick from its Raft progress
    (etcd asks its peer transport, and counts a peer once connected for 5 s). Like its
    check-quorum, a new leader counts every peer as active during its first election timeout."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms  # a check-quorum round: the election timeout
        self._term = -1
        self._last_ms: dict[str, int] = {}

    def observe(self, core: RaftCore, now_ms: int) -> None:
        if core.role != LEADER:
            self._term, self._last_ms = -1, {}
            return
        if core.term != self._term:
            self._term, self._last_ms = core.term, {}
        for peer, pr in core.progress.items():
            if pr.recent_active:
                self._last_ms[peer] = now_ms

    def connected(self, peer: str, now_ms: int) -> bool:
        last = self._last_ms.get(peer)
        return last is not None and now_ms - last <= 2 * self.window_ms


def apply_to_members(change: Change, members: Members) -> Members:
    """The member table after a committed change (idempotent: a replayed change changes nothing)."""
    out = dict(members)
    op, mid = change["op"], change["id"]
    if op in ("add_voter", "add_learner"):
        out.setdefault(mid, {k: change.get(k, "" if k == "name" else []) for k in ("name", "peer_urls", "client_urls")})
    elif op == "update" and mid in active(out):
        out[mid] = {**out[mid], "peer_urls": change["peer_urls"]}
    elif op == "attrs" and mid in active(out):
        out[mid] = {**out[mid], "name": change["name"], "client_urls": change["client_urls"]}
    elif op == "remove":
        out[mid] = dict(REMOVED)
    return out


def _urls_taken(urls: list[str], members: Members, except_id: str | None) -> bool:
    return any(set(urls) & set(info["peer_urls"]) for mid, info in active(members).items() if mid != except_id)


def _is_started(members: Members, member: str) -> bool:
    """etcd's Member.IsStarted: the member has a name."""
    return bool(members.get(member, {}).get("name"))


def _ready_to_add_voter(voters: list[str], members: Members) -> bool:
    """etcd's IsReadyToAddVotingMember: the started voters would be a quorum of the grown cluster."""
    nmembers = len(voters) + 1
    nstarted = sum(1 for v in voters if _is_started(members, v))
    if nstarted == 1 and nmembers == 2:
        return True  # a one-member cluster may grow (etcd: "can accept add member request")
    return nstarted >= nmembers // 2 + 1


def _ready_to_remove_voter(voters: list[str], members: Members, removed: str) -> bool:
    """etcd's IsReadyToRemoveVotingMember: the started voters left would be a quorum of those left."""
    rest = [v for v in voters if v != removed]
    return sum(1 for v in rest if _is_started(members, v)) >= len(rest) // 2 + 1


def _ready_to_promote(voters: list[str], members: Members) -> bool:
    """etcd's IsReadyToPromoteMember: the learner counts as a member and as started."""
    nmembers = len(voters) + 1
    nstarted = 1 + sum(1 for v in voters if _is_started(members, v))
    return nstarted >= nmembers // 2 + 1


def _connected(core: RaftCore, members: list[str], activity: PeerActivity | None, now_ms: int) -> int:
    """How many of `members` the leader is connected to (itself included); all without `activity`."""
    if activity is None:
        return len(members)
    return sum(1 for m in members if m == core.id or activity.connected(m, now_ms))
