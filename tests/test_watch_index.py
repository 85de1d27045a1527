"""The watch actor's index of watchers by key and range, against a brute-force matcher."""

from __future__ import annotations

import random

from petcd.actors.watch_actor import Watcher, _WatcherIndex

KEYS = [b"", b"\0", b"a", b"a\0", b"a\xff", b"a\xff\xff", b"ab", b"abc", b"b", b"ba", b"c", b"\xff", b"\xff\xff"]


def _watcher(watch_id: int, key: bytes, range_end: bytes) -> Watcher:
    return Watcher(gateway="gw", stream=0, watch_id=watch_id, key=key, range_end=range_end, next_rev=1,
                   prev_kv=False, no_put=False, no_delete=False, progress_notify=False)


def _holds(key: bytes, range_end: bytes, k: bytes) -> bool:
    """etcd's rule, written out apart from Watcher.matches."""
    if range_end == b"":
        return k == key
    return key <= k and (range_end == b"\0" or k < range_end)


def _prefix_end(prefix: bytes) -> bytes:
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else b"\0"


def _matched(index: _WatcherIndex, k: bytes) -> list[int]:
    return sorted(w.watch_id for group in index.groups(k) for w in group.values())


def test_single_keys_prefixes_ranges_and_ranges_to_the_end():
    index = _WatcherIndex()
    for i, (key, end) in enumerate([(b"a", b""), (b"a", _prefix_end(b"a")), (b"ab", b"b"), (b"b", b"\0"),
                                     (b"a", _prefix_end(b"a")), (b"c", b"a")]):
        index.add(_watcher(i, key, end))
    assert _matched(index, b"a") == [0, 1, 4]
    assert _matched(index, b"abc") == [1, 2, 4]
    assert _matched(index, b"b") == [3]
    assert _matched(index, b"\xff\xff") == [3]
    assert _matched(index, b"") == [], "an empty range [c, a) holds nothing"


def test_many_watchers_on_one_prefix_share_one_interval():
    index = _WatcherIndex()
    watchers = [_watcher(i, b"p/", b"p0") for i in range(10_000)]
    for w in watchers:
        index.add(w)
    assert len(index._nodes) == 1
    assert _matched(index, b"p/x") == list(range(10_000)) and _matched(index, b"q") == []
    for w in watchers[:9_999]:
        index.remove(w)
    assert _matched(index, b"p/x") == [9_999]
    index.remove(watchers[-1])
    assert index._root is None and not index._nodes


def test_against_brute_force_with_random_adds_and_removes():
    rng = random.Random(20240611)
    for _ in range(30):
        index, live, next_id = _WatcherIndex(), {}, 0
        for _ in range(300):
            if live and rng.random() < 0.4:
                index.remove(live.pop(rng.choice(sorted(live))))
            else:
                key = rng.choice(KEYS)
                end = rng.choice([b"", b"\0", _prefix_end(key) if key else b"\0", rng.choice(KEYS)])
                live[next_id] = w = _watcher(next_id, key, end)
                index.add(w)
                next_id += 1
            for k in rng.sample(KEYS, 4) + [bytes(rng.choices(b"\0ab\xff", k=rng.randint(0, 3)))]:
                assert _matched(index, k) == sorted(i for i, w in live.items() if _holds(w.key, w.range_end, k)), k
        for i in sorted(live):
            index.remove(live.pop(i))
        assert index._root is None and not index._nodes and not index._by_key
