"""The gateway's side of the actor bus: requests out, answers back by request id.

Requests made during one event-loop turn leave as one wire message per
destination (batching), exactly as an actor's sends do.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable
from typing import Any

import msgpack
import zmq
import zmq.asyncio

# A gateway never keeps more requests than this waiting for an answer.
MAX_PENDING_REQUESTS = 100_000


class LinkError(Exception):
    """A request could not be answered; `name` is an error name of `rpc.errors`."""

    def __init__(self, name: str, code: str | None = None, message: str | None = None) -> None:
        super().__init__(name)
        self.name = name
        self.code = code
        self.message = message


class MemberLink:
    def __init__(self, address: str, endpoints: dict[str, str]) -> None:
        self.address = address
        self._endpoints = endpoints
        self._zctx = zmq.asyncio.Context()
        self._pull = self._zctx.socket(zmq.PULL)
        self._pull.bind(endpoints[address])
        self._pushes: dict[str, zmq.asyncio.Socket] = {}
        self._outbox: dict[str, list[dict[str, Any]]] = {}
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        # Request ids must not repeat across gateway restarts: the apply actor drops a request
        # whose (member, address, id) it applied lately, as a duplicated proposal.
        self._ids = itertools.count(secrets.randbits(48) << 12)
        self._flush_scheduled = False
        self._reader: asyncio.Task[None] | None = None
        self.term = 0  # the highest Raft term seen in any answer
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Messages that are not answers (watch events...) go to the listeners, in arrival order."""
        self._listeners.append(listener)

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LinkError("stopped"))
        self._zctx.destroy(linger=0)

    async def call(self, to: str, msg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send `msg` (its "origin" is filled in) and wait for the answer; raises LinkError."""
        if len(self._pending) >= MAX_PENDING_REQUESTS:
            raise LinkError("too_many_requests")
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[request_id] = fut
        self.send(to, {**msg, "origin": [self.address, request_id]})
        # A timer on the future itself: asyncio.wait_for would wrap it in a second one per call.
        timer = loop.call_later(timeout_s, _time_out, fut)
        try:
            answer = await fut
        finally:
            timer.cancel()
            self._pending.pop(request_id, None)
        resp = answer["resp"]
        if "error" in resp:
            raise LinkError(resp["error"], resp.get("code"), resp.get("message"))
        return answer

    def send(self, to: str, msg: dict[str, Any]) -> None:
        self._outbox.setdefault(to, []).append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, {}
        for to, msgs in outbox.items():
            sock = self._pushes.get(to)
            if sock is None:
                sock = self._zctx.socket(zmq.PUSH)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(self._endpoints[to])
                self._pushes[to] = sock
            try:
                sock.send(msgpack.packb([self.address, msgs]), zmq.NOBLOCK)
            except zmq.Again:
                pass  # the actor is not reading; the callers time out

    async def _read_loop(self) -> None:
        while True:
            raw = await self._pull.recv()
            self._dispatch(raw)
            while True:  # drain what else is queued before yielding
                try:
                    raw = await self._pull.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._dispatch(raw)

    def _dispatch(self, raw: bytes) -> None:
        _, msgs = msgpack.unpackb(raw)
        for msg in msgs:
            if msg["t"] != "resp":
                for listener in self._listeners:
                    listener(msg)
                continue
            self.term = max(self.term, msg.get("term", 0))
            fut = self._pending.get(msg["id"])
            if fut is not None and not fut.done():
                fut.set_result(msg)


def _time_out(fut: asyncio.Future[dict[str, Any]]) -> None:
    if not fut.done():
        fut.set_exception(LinkError("timeout"))
