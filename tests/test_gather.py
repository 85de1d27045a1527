"""The process runtime's group commit (`Gather`): when it waits for more requests, and when it stops."""

from __future__ import annotations

import msgpack
import zmq

from petcd.actors.actor import Envelope
from petcd.actors.proc_runtime import Gather, _drain
from petcd.actors.raft_actor import RaftActor


class ScriptedClock:
    """Time that moves only as the gatherer sleeps: no test depends on how fast the machine is."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


def _gather() -> Gather:
    clock = ScriptedClock()
    return Gather(RaftActor.gathered_types, clock=clock, sleep=clock.sleep)


def _props(n: int) -> list[Envelope]:
    return [("m1/gw0", {"t": "propose", "req": b"x", "origin": ["m1/gw0", i]}) for i in range(n)]


class ScriptedArrivals:
    """What arrives during each wait: one list of envelopes per `drain` call (then nothing)."""

    def __init__(self, batch: list[Envelope], arrivals: list[list[Envelope]]) -> None:
        self.batch, self.arrivals, self.calls = batch, list(arrivals), 0

    def __call__(self) -> int:
        self.calls += 1
        got = self.arrivals.pop(0) if self.arrivals else []
        self.batch.extend(got)
        return len(got)


def test_one_request_at_a_time_is_not_held() -> None:
    gather = _gather()
    batch = _props(1)
    drain = ScriptedArrivals(batch, [_props(3)])
    gather.collect(batch, drain)
    assert drain.calls == 0 and len(batch) == 1


def test_concurrent_requests_are_gathered_while_they_keep_coming() -> None:
    gather = _gather()
    batch = _props(2)
    drain = ScriptedArrivals(batch, [_props(2), _props(1)])
    gather.collect(batch, drain)
    assert drain.calls == 3  # two waits that brought requests, one that brought none
    assert len(batch) == 5


def test_a_wait_ends_when_only_other_messages_arrive() -> None:
    gather = _gather()
    batch = _props(2)
    drain = ScriptedArrivals(batch, [[("m1/apply", {"t": "applied", "index": 7})], _props(4)])
    gather.collect(batch, drain)
    assert drain.calls == 1 and len(batch) == 3


def test_a_steady_stream_is_cut_at_the_bound() -> None:
    gather = _gather()
    batch = _props(2)

    def endless() -> int:
        batch.extend(_props(1))
        return 1

    gather.collect(batch, endless)  # returns: MAX_S bounds the wait however much keeps coming
    assert len(batch) == 2 + round(Gather.MAX_S / Gather.GAP_S)


def test_fruitless_waits_use_up_the_credit_then_only_probe() -> None:
    gather = _gather()
    waits = []
    for _ in range(Gather.CREDIT_TURNS + 2 * Gather.PROBE_TURNS):
        batch = _props(2)
        drain = ScriptedArrivals(batch, [])
        gather.collect(batch, drain)
        waits.append(drain.calls)
    assert waits[: Gather.CREDIT_TURNS] == [1] * Gather.CREDIT_TURNS
    later = waits[Gather.CREDIT_TURNS:]
    assert 1 <= sum(later) <= 3  # a probe every PROBE_TURNS turns
    # A probe that finds concurrent requests restores the credit.
    for _ in range(Gather.PROBE_TURNS):
        batch = _props(2)
        drain = ScriptedArrivals(batch, [_props(2)])
        gather.collect(batch, drain)
        if drain.calls > 1:
            break
    batch = _props(2)
    drain = ScriptedArrivals(batch, [])
    gather.collect(batch, drain)
    assert drain.calls == 1


def test_drain_takes_every_message_of_every_wire_message() -> None:
    zctx = zmq.Context()
    try:
        pull = zctx.socket(zmq.PULL)
        pull.bind("inproc://gather-test")
        push = zctx.socket(zmq.PUSH)
        push.connect("inproc://gather-test")
        push.send(msgpack.packb(["m1/gw0", [{"t": "propose"}, {"t": "read"}]]))
        push.send(msgpack.packb(["m2/raft", [{"t": "raft"}]]))
        batch: list[Envelope] = []
        taken = 0
        while taken < 3 and pull.poll(1000):
            taken += _drain(pull, batch, None)
        assert [(s, m["t"]) for s, m in batch] == [("m1/gw0", "propose"), ("m1/gw0", "read"), ("m2/raft", "raft")]
        assert Gather(RaftActor.gathered_types).requests(batch) == 2
    finally:
        zctx.destroy(linger=0)
