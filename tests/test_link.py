"""The gateway's link to its member's actors (rpc/link.py), over real ZeroMQ ipc sockets."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
import uvloop
import zmq
import zmq.asyncio

from petcd.rpc.link import LinkError, MemberLink


class Actor:
    """A stand-in actor: a PULL socket; it answers what `answer` says, through PUSH sockets back."""

    def __init__(self, zctx: zmq.asyncio.Context, endpoints: dict[str, str]) -> None:
        self.endpoints = endpoints
        self.pull = zctx.socket(zmq.PULL)
        self.pull.bind(endpoints["m/raft"])
        self.push = zctx.socket(zmq.PUSH)
        self.push.connect(endpoints["m/gw"])
        self.wire_messages: list[list[dict]] = []

    async def receive(self) -> list[dict]:
        sender, msgs = msgpack.unpackb(await self.pull.recv())
        assert sender == "m/gw"
        self.wire_messages.append(msgs)
        return msgs

    async def answer(self, msgs: list[dict]) -> None:
        answers = [{"t": "resp", "id": m["origin"][1], "resp": {"echo": m["req"]}, "term": 3} for m in msgs]
        await self.push.send(msgpack.packb(["m/raft", answers]))


def run(tmp_path, scenario) -> None:
    endpoints = {"m/gw": f"ipc://{tmp_path}/gw", "m/raft": f"ipc://{tmp_path}/raft"}

    async def main() -> None:
        zctx = zmq.asyncio.Context()
        link = MemberLink("m/gw", endpoints)
        link.start()
        try:
            await scenario(link, Actor(zctx, endpoints))
        finally:
            link.close()
            zctx.destroy(linger=0)

    uvloop.run(main())  # the gateway's loop


def test_calls_of_one_turn_leave_as_one_message_and_get_their_answers(tmp_path):
    async def scenario(link: MemberLink, actor: Actor) -> None:
        calls = [asyncio.ensure_future(link.call("m/raft", {"t": "propose", "req": i}, 30)) for i in range(3)]
        msgs = await actor.receive()
        assert [m["req"] for m in msgs] == [0, 1, 2], "the three calls of one turn, in one wire message"
        await actor.answer(msgs[::-1])
        assert [(await c)["resp"] for c in calls] == [{"echo": 0}, {"echo": 1}, {"echo": 2}]
        assert link.term == 3
        assert not link._pending

    run(tmp_path, scenario)


def test_a_call_nobody_answers_times_out_and_leaves_nothing_behind(tmp_path):
    async def scenario(link: MemberLink, actor: Actor) -> None:
        with pytest.raises(LinkError) as err:
            await link.call("m/raft", {"t": "propose", "req": 1}, 0.05)
        assert err.value.name == "timeout"
        assert not link._pending
        await actor.answer(await actor.receive())  # an answer after the timeout is dropped
        answered = asyncio.ensure_future(link.call("m/raft", {"t": "propose", "req": 2}, 30))
        await actor.answer(await actor.receive())
        assert (await answered)["resp"] == {"echo": 2}

    run(tmp_path, scenario)


def test_a_cancelled_call_leaves_nothing_pending(tmp_path):
    async def scenario(link: MemberLink, actor: Actor) -> None:
        call = asyncio.ensure_future(link.call("m/raft", {"t": "propose", "req": 1}, 30))
        msgs = await actor.receive()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert not link._pending
        await actor.answer(msgs)  # the answer to a cancelled call is dropped
        answered = asyncio.ensure_future(link.call("m/raft", {"t": "propose", "req": 2}, 30))
        await actor.answer(await actor.receive())
        assert (await answered)["resp"] == {"echo": 2}

    run(tmp_path, scenario)
