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


def check(change: Change, core: RaftCore, members: Members) -> str | None:
    """etcd's checks on a membership change, made by the leader; an error name or None."""
    assert core.role == LEADER
    op, mid = change["op"], change["id"]
    if op in ("add_voter", "add_learner"):
        if _urls_taken(change["peer_urls"], members, except_id=None):
            return "peer_urls_exist"
        if mid in members:
            return "member_id_exists"
        if op == "add_learner" and len(core.conf.learners) >= MAX_LEARNERS:
            return "too_many_learners"
        if op == "add_voter" and _started_voters(core) < (len(core.conf.voters) + 1) // 2 + 1:
            return "not_enough_started"
        return None
    if mid not in active(members):
        return "member_not_found"
    if op == "update":
        return "peer_urls_exist" if _urls_taken(change["peer_urls"], members, except_id=mid) else None
    if op == "attrs":
        return None
    if op == "promote":
        if mid not in core.conf.learners:
            return "not_learner"
        leader_match = core.progress[core.id].match
        if core.progress[mid].match < leader_match * LEARNER_SYNC_RATIO:
            return "learner_not_ready"
        return None
    if op == "remove" and mid in core.conf.voters:
        remaining = len(core.conf.voters) - 1
        started = _started_voters(core) - (1 if _is_started(core, mid) else 0)
        if remaining > 0 and started < remaining // 2 + 1:
            return "not_enough_started"
    return None


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


def _is_started(core: RaftCore, member: str) -> bool:
    pr = core.progress.get(member)
    return member == core.id or (pr is not None and (pr.recent_active or pr.match > 0))


def _started_voters(core: RaftCore) -> int:
    return sum(1 for v in core.conf.voters if _is_started(core, v))
