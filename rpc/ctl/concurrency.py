"""clientv3/concurrency as etcdctl 3.4's lock and elect use it: a Session (a
lease kept alive), Mutex and Election, built on KV, Watch and Lease only.

A ``Context`` stands for Go's cancellable context: signal handlers cancel
it, and every blocking step polls it, failing with "context canceled".
"""

from __future__ import annotations

import queue
import threading

from .client import RPCError

DEFAULT_SESSION_TTL = 60
CTX_CANCELED = "context canceled"


class Error(Exception):
    """A failed step; str() is the Go error's text."""


class Canceled(Error):
    pass


class Context:
    def __init__(self, parent: "Context | None" = None):
        self.event = threading.Event()
        self.parent = parent

    def cancel(self) -> None:
        self.event.set()

    def done(self) -> bool:
        return self.event.is_set() or (self.parent is not None and self.parent.done())

    def check(self) -> None:
        if self.done():
            raise Canceled(CTX_CANCELED)


BACKGROUND = Context()


def call(client, service: str, method: str, req, ctx: Context, repeatable: bool):
    """A unary RPC without deadline that gives up when ``ctx`` is cancelled
    (raises Canceled) or fails (raises RPCError)."""
    if ctx is BACKGROUND:
        try:
            return client.call(service, method, req, None, repeatable)
        except RPCError as e:
            raise Error(e.client_message(False)) from None
    ctx.check()
    box: queue.Queue = queue.Queue()

    def run():
        try:
            box.put((True, client.call(service, method, req, None, repeatable)))
        except RPCError as e:
            box.put((False, e))

    threading.Thread(target=run, daemon=True).start()
    while True:
        try:
            ok, v = box.get(timeout=0.05)
        except queue.Empty:
            ctx.check()
            continue
        if ok:
            return v
        raise Error(v.client_message(False))


def _range(key: bytes, **kw):
    from petcd.rpc.pb import rpc_pb2
    return rpc_pb2.RangeRequest(key=key, **kw)


def _prefix_end(key: bytes) -> bytes:
    from .kv_commands import prefix_range_end
    return prefix_range_end(key)


def with_first_create(pfx: bytes):
    # WithFirstCreate: prefix, sort by create revision ascending, limit 1
    return _range(pfx, range_end=_prefix_end(pfx), sort_target=2, sort_order=1, limit=1)


# ------------------------------------------------------------------ Session

class Session:
    def __init__(self, client, ttl: int = DEFAULT_SESSION_TTL):
        from petcd.rpc.pb import rpc_pb2

        from .lease_command import KeepAlive

        self.client = client
        if ttl <= 0:
            ttl = DEFAULT_SESSION_TTL
        resp = call(client, "Lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl), BACKGROUND, True)
        self.lease = resp.ID
        self.done = threading.Event()
        ka = KeepAlive(client, self.lease)

        def keep():
            for _ in ka.responses():
                pass
            self.done.set()

        threading.Thread(target=keep, daemon=True).start()


# ------------------------------------------------------------------ waiting for deletes

def wait_delete(client, key: bytes, rev: int, ctx: Context) -> None:
    from .watch_client import Watcher

    watcher = Watcher(client, metadata=[])
    w = watcher.watch(key, b"", rev)
    last = None
    try:
        while True:
            try:
                r = w.responses.get(timeout=0.05)
            except queue.Empty:
                if ctx.done():
                    break
                continue
            if r is None:
                break
            last = r
            for ev in r.events or ():
                if ev.type == 1:  # DELETE
                    return
    finally:
        watcher.close()
    if last is not None and last.err():
        raise Error(last.err())
    ctx.check()
    raise Error("lost watcher waiting for delete")


def wait_deletes(client, pfx: bytes, max_create_rev: int, ctx: Context):
    """Wait until no key under ``pfx`` created at or before ``max_create_rev`` is left."""
    while True:
        # WithLastCreate + WithMaxCreateRev
        req = _range(pfx, range_end=_prefix_end(pfx), sort_target=2, sort_order=2, limit=1,
                     max_create_revision=max_create_rev)
        resp = call(client, "KV", "Range", req, ctx, True)
        if len(resp.kvs) == 0:
            return resp.header
        wait_delete(client, resp.kvs[0].key, resp.header.revision, ctx)


# ------------------------------------------------------------------ Mutex

class Mutex:
    def __init__(self, session: Session, pfx: str):
        self.s = session
        self.pfx = pfx.encode("utf-8", "surrogateescape") + b"/"
        self.my_key = b""
        self.my_rev = -1
        self.hdr = None

    def lock(self, ctx: Context) -> None:
        from petcd.rpc.pb import rpc_pb2

        client = self.s.client
        self.my_key = self.pfx + (b"%x" % self.s.lease)
        cmp = rpc_pb2.Compare(result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.CREATE,
                              key=self.my_key, create_revision=0)
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=self.my_key, value=b"",
                                                               lease=self.s.lease))
        get = rpc_pb2.RequestOp(request_range=_range(self.my_key))
        get_owner = rpc_pb2.RequestOp(request_range=with_first_create(self.pfx))
        txn = rpc_pb2.TxnRequest(compare=[cmp], success=[put, get_owner], failure=[get, get_owner])
        resp = call(client, "KV", "Txn", txn, ctx, False)
        self.my_rev = resp.header.revision
        if not resp.succeeded:
            self.my_rev = resp.responses[0].response_range.kvs[0].create_revision
        owner = resp.responses[1].response_range.kvs
        if len(owner) == 0 or owner[0].create_revision == self.my_rev:
            self.hdr = resp.header
            return
        try:
            hdr = wait_deletes(client, self.pfx, self.my_rev - 1, ctx)
        except Error:
            self.unlock(BACKGROUND)
            raise
        self.hdr = hdr

    def unlock(self, ctx: Context) -> None:
        from petcd.rpc.pb import rpc_pb2
        call(self.s.client, "KV", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=self.my_key), ctx, False)
        self.my_key = b"\x00"
        self.my_rev = -1

    def key(self) -> bytes:
        return self.my_key


# ------------------------------------------------------------------ Election

class Election:
    def __init__(self, session: Session, pfx: str):
        self.session = session
        self.key_prefix = pfx.encode("utf-8", "surrogateescape") + b"/"
        self.leader_key = b""
        self.leader_rev = 0
        self.leader_session = None
        self.hdr = None

    def campaign(self, ctx: Context, val: bytes) -> None:
        from petcd.rpc.pb import rpc_pb2

        s = self.session
        client = s.client
        k = self.key_prefix + (b"%x" % s.lease)
        cmp = rpc_pb2.Compare(result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.CREATE,
                              key=k, create_revision=0)
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=val, lease=s.lease))
        get = rpc_pb2.RequestOp(request_range=_range(k))
        resp = call(client, "KV", "Txn", rpc_pb2.TxnRequest(compare=[cmp], success=[put], failure=[get]),
                    ctx, False)
        self.leader_key, self.leader_rev, self.leader_session = k, resp.header.revision, s
        if not resp.succeeded:
            kv = resp.responses[0].response_range.kvs[0]
            self.leader_rev = kv.create_revision
            if kv.value != val:
                try:
                    self.proclaim(ctx, val)
                except Error:
                    self.resign(ctx)
                    raise
        try:
            wait_deletes(client, self.key_prefix, self.leader_rev - 1, ctx)
        except Error:
            if ctx.done():
                self.resign(BACKGROUND)
            else:
                self.leader_session = None
            raise
        self.hdr = resp.header

    def proclaim(self, ctx: Context, val: bytes) -> None:
        from petcd.rpc.pb import rpc_pb2

        if self.leader_session is None:
            raise Error("election: not leader")
        client = self.session.client
        cmp = rpc_pb2.Compare(result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.CREATE,
                              key=self.leader_key, create_revision=self.leader_rev)
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=self.leader_key, value=val,
                                                               lease=self.leader_session.lease))
        resp = call(client, "KV", "Txn", rpc_pb2.TxnRequest(compare=[cmp], success=[put]), ctx, False)
        if not resp.succeeded:
            self.leader_key = b""
            raise Error("election: not leader")
        self.hdr = resp.header

    def resign(self, ctx: Context) -> None:
        from petcd.rpc.pb import rpc_pb2

        if self.leader_session is None:
            return
        cmp = rpc_pb2.Compare(result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.CREATE,
                              key=self.leader_key, create_revision=self.leader_rev)
        dele = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=self.leader_key))
        try:
            resp = call(self.session.client, "KV", "Txn",
                        rpc_pb2.TxnRequest(compare=[cmp], success=[dele]), ctx, False)
            self.hdr = resp.header
        finally:
            self.leader_key = b""
            self.leader_session = None

    def key(self) -> bytes:
        return self.leader_key

    def observe(self, ctx: Context, out: "queue.Queue") -> None:
        """Put a RangeResponse on ``out`` for each leader (and each of its
        proclamations); None when observing ends."""
        try:
            self._observe(ctx, out)
        except Error:
            pass
        out.put(None)

    def _observe(self, ctx: Context, out: "queue.Queue") -> None:
        from petcd.rpc.pb import rpc_pb2

        from .watch_client import Watcher

        client = self.session.client
        while True:
            resp = call(client, "KV", "Range", with_first_create(self.key_prefix), ctx, True)
            kv, hdr = None, None
            if len(resp.kvs) == 0:
                watcher = Watcher(client, metadata=[])
                w = watcher.watch(self.key_prefix, _prefix_end(self.key_prefix), resp.header.revision)
                try:
                    while kv is None:
                        wr = _next(w, ctx)
                        if wr is None or wr.err():
                            return
                        for ev in wr.events or ():
                            if ev.type == 0:  # PUT
                                hdr, kv = rpc_pb2.ResponseHeader(), ev.kv
                                hdr.CopyFrom(wr.header)
                                hdr.revision = kv.mod_revision
                                break
                finally:
                    watcher.close()
            else:
                hdr, kv = resp.header, resp.kvs[0]
            first = rpc_pb2.RangeResponse(kvs=[kv])
            first.header.CopyFrom(hdr)
            out.put(first)
            ctx.check()

            watcher = Watcher(client, metadata=[])
            w = watcher.watch(kv.key, b"", hdr.revision + 1)
            try:
                deleted = False
                while not deleted:
                    wr = _next(w, ctx)
                    if wr is None:
                        return
                    for ev in wr.events or ():
                        if ev.type == 1:  # DELETE
                            deleted = True
                            break
                        resp.header.CopyFrom(wr.header)
                        del resp.kvs[:]
                        resp.kvs.append(ev.kv)
                        cur = rpc_pb2.RangeResponse()
                        cur.CopyFrom(resp)
                        out.put(cur)
            finally:
                watcher.close()


def _next(w, ctx: Context):
    """The next response of a watch, or None once it is closed or ctx is cancelled."""
    while True:
        try:
            return w.responses.get(timeout=0.05)
        except queue.Empty:
            if ctx.done():
                return None
