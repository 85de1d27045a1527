"""One etcd write txn (storeTxnWrite) and the put / delete_range operations on it."""

from .errors import key_not_found, key_too_long, lease_not_found
from .history import DELETE, PUT
from .keys import key_bounds
from .records import Record, kv_dict, tombstone
from .tables import StoreTxn


class WriteTxn:
    """All changes share main revision begin_rev + 1; sub counts them from 0.

    Reads inside the txn see its own changes, at read_rev.

    Each change also goes to tables.events, if given, as its watch event, exactly as
    history.events would read it back after the commit (prev_kv is the key's value at
    begin_rev): the apply actor publishes these without reading them back.
    """

    def __init__(self, tables: StoreTxn) -> None:
        self.tables = tables
        self.begin_rev = tables.current_revision()
        self.changes = 0

    @property
    def read_rev(self) -> int:
        return self.begin_rev + 1 if self.changes else self.begin_rev

    def get(self, key: bytes) -> dict | None:
        """The key's live kv as this txn sees it."""
        return self._kv_at(key, self.read_rev)

    def _kv_at(self, key: bytes, rev: int) -> dict | None:
        found = self.tables.latest(key, rev)
        return None if found is None else kv_dict(self.tables.record(*found), found[0])

    def put(self, key: bytes, value: bytes, lease: int) -> None:
        rev = self.begin_rev + 1
        previous = self.get(key)
        if previous is None:
            record = Record(key, False, value, rev, 1, lease)
        else:
            record = Record(key, False, value, previous["create_revision"],
                            previous["version"] + 1, lease)
        # Keep the lease -> keys index in step, so that revoking a lease finds its keys.
        if previous is not None and previous["lease"] and previous["lease"] != lease:
            self.tables.detach(previous["lease"], key)
        if lease:
            self.tables.attach(lease, key)
        self.tables.add(rev, self.changes, record)
        if self.tables.events is not None:
            # Once this txn changed something, `previous` may hold its own change; the event's is the key's value before.
            self._event(PUT, kv_dict(record, rev), previous if not self.changes else self._kv_at(key, self.begin_rev))
        self.changes += 1

    def delete_range(self, key: bytes, range_end: bytes) -> int:
        live = list(self.tables.scan(*key_bounds(key, range_end), self.read_rev))
        rev = self.begin_rev + 1
        events = self.tables.events is not None
        leases = self.tables.any_key_attached()  # else reading each record for its lease is wasted
        for live_key, main, sub in live:
            record = self.tables.record(main, sub) if leases or events else None
            if record is not None and record.lease:
                self.tables.detach(record.lease, live_key)
            if record is not None and events:
                self._event(DELETE, {"key": live_key, "mod_revision": rev},
                            kv_dict(record, main) if main <= self.begin_rev else self._kv_at(live_key, self.begin_rev))
            self.tables.add(rev, self.changes, tombstone(live_key))
            self.changes += 1
        return len(live)

    def _event(self, kind: int, kv: dict, prev_kv: dict | None) -> None:
        sink = self.tables.events
        assert sink is not None
        rev = self.begin_rev + 1
        if not sink or sink[-1][0] != rev:
            sink.append([rev, []])
        event = {"type": kind, "kv": kv}
        if prev_kv is not None:
            event["prev_kv"] = prev_kv
        sink[-1][1].append(event)

    def end(self) -> int:
        """Commits the revision if anything changed; returns the header revision."""
        if self.changes:
            self.tables.set_current_revision(self.begin_rev + 1)
        return self.read_rev


def check_key_length(tables: StoreTxn, key: bytes) -> None:
    assert key, "the API layer rejects empty keys"
    if len(key) > tables.max_key_bytes:
        raise key_too_long(tables.max_key_bytes)


def check_lease(tables: StoreTxn, lease: int) -> None:
    if lease != 0 and not tables.lease_exists(lease):
        raise lease_not_found()


def check_put_in_txn(tables: StoreTxn, req: dict, at_rev: int) -> None:
    """etcd's checkPut, against the txn's starting view (plus petcd's key length)."""
    check_key_length(tables, req.get("key", b""))
    if req.get("ignore_value", False) or req.get("ignore_lease", False):
        if tables.latest(req["key"], at_rev) is None:
            raise key_not_found()
    check_lease(tables, req.get("lease", 0))


def put(txn: WriteTxn, req: dict) -> dict:
    """A PutResponse without revision. Raises before writing anything."""
    key = req.get("key", b"")
    ignore_value = req.get("ignore_value", False)
    ignore_lease = req.get("ignore_lease", False)
    prev_kv = req.get("prev_kv", False)
    previous = txn.get(key) if ignore_value or ignore_lease or prev_kv else None
    if (ignore_value or ignore_lease) and previous is None:
        raise key_not_found()
    txn.put(
        key,
        previous["value"] if ignore_value else req.get("value", b""),
        previous["lease"] if ignore_lease else req.get("lease", 0),
    )
    if prev_kv and previous is not None:
        return {"prev_kv": previous}
    return {}


def delete_range(txn: WriteTxn, req: dict) -> dict:
    """A DeleteRangeResponse without revision."""
    key, range_end = req.get("key", b""), req.get("range_end", b"")
    prev_kvs = []
    if req.get("prev_kv", False):
        bounds = key_bounds(key, range_end)
        prev_kvs = [kv_dict(txn.tables.record(main, sub), main)
                    for _, main, sub in txn.tables.scan(*bounds, txn.read_rev)]
    return {"deleted": txn.delete_range(key, range_end), "prev_kvs": prev_kvs}
