"""clientv3's watcher, as etcdctl uses it: one Watch stream (with the
"hasleader" metadata of WithRequireLeader) carrying every watch of the
process, creations sent one at a time, responses dispatched by watch ID,
progress notifications (watch ID -1) broadcast, and what the user sees of a
failed creation or a compaction."""

from __future__ import annotations

import collections
import queue
import threading
import time

from .printer import WatchResponse

REQUIRE_LEADER_MD = [("hasleader", "true")]


class Watch:
    """One watch: responses arrive on ``responses`` (a queue; None = closed)."""

    def __init__(self, create_req):
        self.req = create_req
        self.id: int | None = None
        self.responses: "queue.Queue" = queue.Queue()
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.responses.put(None)

    def __iter__(self):
        while True:
            r = self.responses.get()
            if r is None:
                return
            yield r


class Watcher:
    def __init__(self, client, metadata=REQUIRE_LEADER_MD):
        self.client = client
        self.metadata = list(metadata)
        self.lock = threading.Lock()
        self.stream = None
        self.resuming: collections.deque = collections.deque()  # waiting for their created response
        self.create_in_flight = False
        self.substreams: dict[int, Watch] = {}
        self.close_err = ""
        self.closed = False

    # -- API -------------------------------------------------------------------

    def watch(self, key: bytes, range_end: bytes = b"", rev: int = 0, prev_kv: bool = False,
              progress_notify: bool = False) -> Watch:
        from petcd.rpc.pb import rpc_pb2
        req = rpc_pb2.WatchCreateRequest(key=key, range_end=range_end, start_revision=rev,
                                         prev_kv=prev_kv, progress_notify=progress_notify)
        w = Watch(req)
        with self.lock:
            self.resuming.append(w)
            self._ensure_stream()
            self._send_next_create()
        return w

    def request_progress(self) -> None:
        from petcd.rpc.pb import rpc_pb2
        with self.lock:
            self._ensure_stream()
            self.stream.send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def close(self) -> None:
        """Cancel every watch and the stream (their channels close)."""
        with self.lock:
            self.closed = True
            if self.stream is not None:
                self.stream.close()
                self.stream = None
            for w in list(self.substreams.values()) + list(self.resuming):
                w.close()
            self.substreams.clear()
            self.resuming.clear()

    # -- stream ------------------------------------------------------------------

    def _ensure_stream(self) -> None:
        if self.stream is None:
            self.stream = self.client.stream("Watch", "Watch", self.metadata)
            threading.Thread(target=self._run, args=(self.stream,), daemon=True).start()

    def _send_next_create(self) -> None:
        from petcd.rpc.pb import rpc_pb2
        if self.create_in_flight:
            return
        while self.resuming and self.resuming[0].closed:
            self.resuming.popleft()
        if self.resuming:
            self.create_in_flight = True
            self.stream.send(rpc_pb2.WatchRequest(create_request=self.resuming[0].req))

    def _run(self, stream) -> None:
        from .client import StreamClosed
        while True:
            try:
                resp = stream.recv()
            except StreamClosed as e:
                self._stream_closed(stream, e.error)
                return
            with self.lock:
                self._dispatch(resp)

    def _dispatch(self, resp) -> None:
        if resp.created:
            self.create_in_flight = False
            w = self.resuming.popleft() if self.resuming else None
            if w is not None:
                if resp.watch_id == -1 or (resp.canceled and resp.cancel_reason):
                    # failed creation: no channel; the user sees a made-up cancel
                    self.close_err = resp.cancel_reason
                    w.responses.put(WatchResponse(canceled=True, close_err=resp.cancel_reason))
                    w.close()
                else:
                    w.id = resp.watch_id
                    self.substreams[w.id] = w
                    if w.req.start_revision == 0:
                        w.req.start_revision = resp.header.revision
            self._send_next_create()
            return
        if resp.canceled and resp.compact_revision == 0:
            w = self.substreams.pop(resp.watch_id, None)
            if w is not None:
                w.close()
            return
        wr = WatchResponse.from_pb(resp)
        if wr.is_progress_notify() and resp.watch_id == -1:
            for w in self.substreams.values():
                w.responses.put(wr)
            return
        w = self.substreams.get(resp.watch_id)
        if w is None:
            return
        if wr.events:
            w.req.start_revision = wr.events[-1].kv.mod_revision + 1
        elif not wr.created:
            w.req.start_revision = max(w.req.start_revision, wr.header.revision)
        w.responses.put(wr)
        if wr.err():
            self.substreams.pop(resp.watch_id, None)
            w.close()

    def _stream_closed(self, stream, error) -> None:
        """Reconnect and resume every watch (clientv3 does so until the watch
        is closed), unless the server refused for good."""
        with self.lock:
            if self.stream is not stream or self.closed:
                return
            stream.close()
            self.stream = None
            if error is not None and error.code not in ("Unavailable", "Internal", "Unknown"):
                msg = error.client_message(False)
                for w in list(self.substreams.values()) + list(self.resuming):
                    w.responses.put(WatchResponse(canceled=True, close_err=msg))
                    w.close()
                self.substreams.clear()
                self.resuming.clear()
                return
            active = [w for w in self.substreams.values() if not w.closed]
            self.substreams.clear()
            self.resuming = collections.deque(active + list(self.resuming))
            self.create_in_flight = False
        time.sleep(0.5)
        with self.lock:
            if self.stream is None and self.resuming and not self.closed:
                self._ensure_stream()
                self._send_next_create()
