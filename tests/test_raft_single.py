"""RaftCore and RaftLog as one member uses them: propose, persist, commit, restart."""

from __future__ import annotations

import random

from petcd.actors.raft import LEADER, RaftCore
from petcd.store.raftlog import ConfState, Entry, HardState, RaftLog


def _drive(core: RaftCore, log: RaftLog) -> list[Entry]:
    """Run the Ready loop as the Raft actor does; return what was handed to the state machine."""
    applied: list[Entry] = []
    for _ in range(10):
        if not core.has_ready():
            break
        rd = core.ready()
        log.save(rd.hard_state, rd.entries)
        applied += rd.committed
        core.advance(rd)
    assert not core.has_ready()
    return applied


def _lone(tmp_path, seed: int = 1) -> tuple[RaftCore, RaftLog]:
    log = RaftLog(str(tmp_path / "raft"), sync=False)
    core = RaftCore("a", ConfState(("a",)), log, random.Random(seed).random)
    core.restore_applied(0)
    return core, log


def test_lone_voter_elects_itself_and_commits_an_empty_entry(tmp_path):
    core, log = _lone(tmp_path)
    while core.role != LEADER:
        core.tick()
    applied = _drive(core, log)
    assert core.term == 1
    assert [(e.index, e.term, e.data) for e in applied] == [(1, 1, b"")]
    assert log.hard_state == HardState(term=1, vote="a", commit=1)


def test_proposals_commit_only_after_they_are_persisted(tmp_path):
    core, log = _lone(tmp_path)
    while core.role != LEADER:
        core.tick()
    _drive(core, log)
    assert core.propose([b"x", b"y"])
    rd = core.ready()
    assert [e.data for e in rd.entries] == [b"x", b"y"]
    assert rd.committed == [], "nothing may commit before the leader's own append is durable"
    log.save(rd.hard_state, rd.entries)
    core.advance(rd)
    rd = core.ready()
    assert [e.data for e in rd.committed] == [b"x", b"y"]
    assert core.commit == 3


def test_restart_resumes_term_vote_and_log(tmp_path):
    core, log = _lone(tmp_path)
    while core.role != LEADER:
        core.tick()
    _drive(core, log)
    core.propose([b"x"])
    _drive(core, log)
    log.close()

    log = RaftLog(str(tmp_path / "raft"), sync=False)
    assert (log.last_index, log.last_term) == (2, 1)
    core = RaftCore("a", ConfState(("a",)), log, random.Random(2).random)
    core.restore_applied(1)  # the state machine had applied entry 1 only
    while core.role != LEADER:
        core.tick()
    applied = _drive(core, log)
    assert core.term == 2, "a new term after restart"
    assert [(e.index, e.data) for e in applied] == [(2, b"x"), (3, b"")]


def test_read_index_on_a_lone_leader_waits_for_its_term_commit(tmp_path):
    core, log = _lone(tmp_path)
    while core.role != LEADER:
        core.tick()
    assert core.read_index("r1")
    rd = core.ready()
    assert rd.reads == [], "no read point before the leader committed an entry of its term"
    log.save(rd.hard_state, rd.entries)
    core.advance(rd)
    rd = core.ready()
    assert rd.reads == [(1, "r1")]


def test_follower_refuses_proposals_and_reads(tmp_path):
    log = RaftLog(str(tmp_path / "raft"), sync=False)
    core = RaftCore("a", ConfState(("a", "b", "c")), log, random.Random(1).random)
    assert not core.propose([b"x"])
    assert not core.read_index("r")


def test_raftlog_save_replaces_a_conflicting_suffix(tmp_path):
    log = RaftLog(str(tmp_path / "raft"), sync=False)
    log.save(HardState(1, "a", 0), [Entry(1, 1, b"a"), Entry(2, 1, b"b"), Entry(3, 1, b"c")])
    log.save(None, [Entry(2, 2, b"B")])
    assert log.last_index == 2
    assert [(e.index, e.term, e.data) for e in log.entries(1, 3)] == [(1, 1, b"a"), (2, 2, b"B")]
    log.close()
    log = RaftLog(str(tmp_path / "raft"), sync=False)
    assert (log.last_index, log.last_term, log.hard_state) == (2, 2, HardState(1, "a", 0))
