"""Watch events read back from the MVCC history (etcd's mvccpb.Event as dicts)."""

from __future__ import annotations

from .records import kv_dict
from .tables import StoreTxn

PUT, DELETE = 0, 1


def events(tables: StoreTxn, from_rev: int, to_rev: int, max_revisions: int) -> list[list]:
    """[[revision, [event, ...]], ...] for from_rev <= revision <= to_rev, at most max_revisions of them.

    An event is {"type", "kv", "prev_kv"?}: a DELETE's kv holds only key and
    mod_revision, as etcd's do; prev_kv is the key's value before the event.
    """
    assert 0 < from_rev and max_revisions > 0
    out: list[list] = []
    # While a compaction is in progress, what it will drop is left out as if gone already (a
    # tombstone at the compact revision, a prev_kv it supersedes), so events do not depend on its pace.
    compact_rev = tables.compact_revision() if tables.compaction_pending() else 0
    for main, sub, record in tables.revisions(from_rev, to_rev):
        if main <= compact_rev and tables.is_compacted_away(main, sub, record, compact_rev):
            continue
        if not out or out[-1][0] != main:
            if len(out) == max_revisions:
                break
            out.append([main, []])
        before = tables.latest(record.key, main - 1)
        if before is not None and before[0] <= compact_rev and tables.is_compacted_away(*before, tables.record(*before), compact_rev):
            before = None
        event: dict = {"type": DELETE if record.tombstone else PUT}
        event["kv"] = {"key": record.key, "mod_revision": main} if record.tombstone else kv_dict(record, main)
        if before is not None:
            event["prev_kv"] = kv_dict(tables.record(*before), before[0])
        out[-1][1].append(event)
    return out
