"""etcdserverpb.Watch: many watches multiplexed on each bidi stream, fed by the member's watch actor.

The gateway owns the streams and their watch ids; the watch actor owns the
matching. A stream whose client reads too slowly has its watchers moved back
to catch-up from history (the events dropped here are sent again), so one slow
client costs bounded memory and holds back nobody.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from petcd.rpc.convert import from_dict, to_dict
from petcd.rpc.gateway_state import GatewayState
from petcd.rpc.pb import kv_pb2
from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.store import auth
from petcd.store.errors import StoreError

# Responses queued for one stream before its watchers are sent back to catch up from history.
MAX_QUEUED_RESPONSES = 1024
PROGRESS_WATCH_ID = -1
INVALID_WATCH_ID = -1  # clientv3.InvalidWatchID: a watch refused at creation


@dataclass(slots=True)
class _Stream:
    queue: asyncio.Queue[pb.WatchResponse | None] = field(default_factory=asyncio.Queue)
    watch_ids: dict[int, bool] = field(default_factory=dict)  # watch id -> fragment
    lagging: set[int] = field(default_factory=set)
    next_id: int = 0


class WatchService(pb_grpc.WatchServicer):
    def __init__(self, state: GatewayState) -> None:
        self._s = state
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count(1)
        self._watch_addr = state.raft_address.replace("/raft", "/watch")
        state.link.subscribe(self._on_message)

    async def Watch(self, request_iterator: AsyncIterator[pb.WatchRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchResponse]:
        sid = next(self._ids)
        stream = self._streams[sid] = _Stream()
        reader = asyncio.get_running_loop().create_task(self._read(sid, stream, request_iterator, context))
        try:
            while True:
                resp = await stream.queue.get()
                if resp is None:
                    return
                yield resp
        finally:
            reader.cancel()
            self._streams.pop(sid, None)
            self._s.link.send(self._watch_addr, {"t": "watch_drop", "stream": sid})

    # ------------------------------------------------------------------ requests
    async def _read(self, sid: int, stream: _Stream, requests: AsyncIterator[pb.WatchRequest],
                    context: grpc.aio.ServicerContext) -> None:
        try:
            async for req in requests:
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    self._create(sid, stream, req.create_request, context)
                elif kind == "cancel_request":
                    wid = req.cancel_request.watch_id
                    if stream.watch_ids.pop(wid, None) is not None:
                        self._s.link.send(self._watch_addr, {"t": "watch_cancel", "stream": sid, "watch_id": wid})
                        stream.queue.put_nowait(pb.WatchResponse(header=self._header(), watch_id=wid, canceled=True))
                elif kind == "progress_request":
                    self._s.link.send(self._watch_addr, {"t": "watch_progress", "stream": sid})
        except grpc.RpcError:
            stream.queue.put_nowait(None)  # the client went away
        # A client that half-closes keeps its watches, as with etcd: the stream ends when the RPC does.

    def _create(self, sid: int, stream: _Stream, creq: pb.WatchCreateRequest, context: grpc.aio.ServicerContext) -> None:
        current = self._s.store.current_revision()
        try:  # etcd's isWatchPermitted: read permission on the range, checked once, at creation
            self._s.store.check_permission(self._s.identify(context), creq.key or b"\x00", creq.range_end, auth.READ)
        except StoreError as e:
            stream.queue.put_nowait(pb.WatchResponse(header=self._header(current), watch_id=INVALID_WATCH_ID, created=True,
                                                     canceled=True, cancel_reason=go_status_text(e.grpc_code, e.message)))
            return
        wid = creq.watch_id
        if wid == 0:  # etcd's AutoWatchID: the next free id of this stream
            while stream.next_id in stream.watch_ids:
                stream.next_id += 1
            wid = stream.next_id
            stream.next_id += 1
        elif wid in stream.watch_ids:
            stream.queue.put_nowait(pb.WatchResponse(header=self._header(current), watch_id=wid, created=True, canceled=True,
                                                     cancel_reason="mvcc: duplicate watch ID provided on the WatchStream"))
            return
        stream.watch_ids[wid] = creq.fragment
        # The "created" answer goes first; events can only follow it.
        stream.queue.put_nowait(pb.WatchResponse(header=self._header(current), watch_id=wid, created=True))
        spec = to_dict(creq)
        self._s.link.send(self._watch_addr, {
            "t": "watch_create", "stream": sid, "watch_id": wid, "key": spec.get("key", b""), "range_end": spec.get("range_end", b""),
            # A watch from revision 0 starts after this member's current revision.
            "start_revision": creq.start_revision or current + 1,
            "prev_kv": creq.prev_kv, "filters": list(creq.filters), "progress_notify": creq.progress_notify,
        })

    # ------------------------------------------------------------------ from the watch actor
    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "wev":
            for sid, wid, revision, events in msg["items"]:
                self._events(sid, wid, revision, events)
            return
        stream = self._streams.get(msg["stream"])
        if stream is None:
            return
        wid = msg["watch_id"]
        if kind == "wresync":
            stream.lagging.discard(wid)
        elif kind == "wcancel":
            if stream.watch_ids.pop(wid, None) is not None:
                if msg["compact_revision"]:
                    # As etcd 3.4 answers a watch whose start revision is compacted: its mvcc's
                    # response carries no revision (the header's is 0) and the server adds no
                    # cancel_reason (clients derive the error from compact_revision).
                    resp = pb.WatchResponse(header=self._header(0), watch_id=wid, canceled=True, compact_revision=msg["compact_revision"])
                else:
                    resp = pb.WatchResponse(header=self._header(), watch_id=wid, canceled=True, cancel_reason=msg["reason"])
                stream.queue.put_nowait(resp)
        elif kind == "wprogress":
            if wid == PROGRESS_WATCH_ID or wid in stream.watch_ids:
                stream.queue.put_nowait(pb.WatchResponse(header=self._header(msg["revision"]), watch_id=wid))

    def _events(self, sid: int, wid: int, revision: int, events: list[dict[str, Any]]) -> None:
        stream = self._streams.get(sid)
        if stream is None or wid not in stream.watch_ids or wid in stream.lagging:
            return  # canceled, gone, or waiting for its catch-up
        if stream.queue.qsize() >= MAX_QUEUED_RESPONSES:
            stream.lagging.add(wid)
            first_rev = events[0]["kv"]["mod_revision"]
            self._s.link.send(self._watch_addr, {"t": "watch_lag", "stream": sid, "watch_id": wid, "from_rev": first_rev})
            return
        header = self._header(revision)
        pb_events = [from_dict(kv_pb2.Event, ev) for ev in events]
        if not stream.watch_ids[wid]:
            stream.queue.put_nowait(pb.WatchResponse(header=header, watch_id=wid, events=pb_events))
            return
        # fragment=true: split a response larger than a request may be, never inside one event
        limit = self._s.max_request_bytes
        chunk: list[kv_pb2.Event] = []
        size = 0
        parts: list[list[kv_pb2.Event]] = []
        for ev in pb_events:
            if chunk and size + ev.ByteSize() > limit:
                parts.append(chunk)
                chunk, size = [], 0
            chunk.append(ev)
            size += ev.ByteSize()
        parts.append(chunk)
        for i, part in enumerate(parts):
            stream.queue.put_nowait(pb.WatchResponse(header=header, watch_id=wid, events=part, fragment=i < len(parts) - 1))

    def _header(self, revision: int | None = None) -> pb.ResponseHeader:
        return self._s.header(self._s.store.current_revision() if revision is None else revision, self._s.link.term)


def go_status_text(code: str, message: str) -> str:
    """A gRPC status as Go prints it (etcd puts this in a refused watch's cancel_reason)."""
    return f"rpc error: code = {code.title().replace('_', '')} desc = {message}"
