"""A small read-only reader of bbolt files (etcd's backend database), written from bbolt's page format.

Layout (little-endian, as bbolt writes it on the machines etcd runs on):
- every page starts with a 16-byte header: id u64, flags u16, count u16, overflow u32; a page with
  overflow N spans N + 1 consecutive pages of the file's page size;
- pages 0 and 1 are meta pages (flag 0x04): magic u32 (0xED0CDAED), version u32 (2), page size
  u32, flags u32, root bucket (root pgid u64, sequence u64), freelist pgid u64, high-water pgid u64,
  txid u64, checksum u64 = fnv-1a 64 of the 56 bytes before it. The valid meta with the higher txid
  is the current one;
- branch pages (0x01): `count` elements of (pos u32, ksize u32, pgid u64), the key at element
  address + pos; leaf pages (0x02): elements of (flags u32, pos u32, ksize u32, vsize u32), key then
  value at element address + pos; element flag 0x01 marks a nested bucket;
- a bucket value is (root pgid u64, sequence u64); root 0 means an inline bucket whose leaf page
  (header and elements) follows in the value itself.

Every loop is bounded by the file's page count, and damage is reported as BboltError.
`check()` is bbolt's Tx.Check (bbolt v1.3.6 tx.go, the version etcd 3.4 vendors): the freelist
page (meta freelist pgid, or none: u64 max, as etcd writes with NoFreelistSync) lists free page
ids, u16 count or 0xFFFF and the count as the first u64; every page below the high-water mark must
be reachable from the root bucket or free, and reachable once.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections import Counter
from collections.abc import Iterator

MAGIC = 0xED0CDAED
VERSION = 2
PAGE_HEADER_BYTES = 16
ELEMENT_BYTES = 16
BUCKET_HEADER_BYTES = 16
META_BYTES = 64
MAX_DEPTH = 64  # a B+tree of pages this deep would hold more keys than any file can

BRANCH_PAGE, LEAF_PAGE, META_PAGE, FREELIST_PAGE = 0x01, 0x02, 0x04, 0x10
BUCKET_LEAF_FLAG = 0x01
NO_FREELIST = (1 << 64) - 1  # bbolt's pgidNoFreelist: the freelist is not written (NoFreelistSync)

_PAGE_HEADER = struct.Struct("<QHHI")
_META = struct.Struct("<IIIIQQQQQQ")
_BRANCH_ELEMENT = struct.Struct("<IIQ")
_LEAF_ELEMENT = struct.Struct("<IIII")
_BUCKET = struct.Struct("<QQ")
_U32 = struct.Struct("<I")
_FNV_OFFSET, _FNV_PRIME, _U64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1
_PAGE_SIZES = (4096, 8192, 16384, 32768, 65536, 1024, 2048)


def page_type(flags: int) -> str:
    """bbolt's page.typ()."""
    for flag, name in ((BRANCH_PAGE, "branch"), (LEAF_PAGE, "leaf"), (META_PAGE, "meta"), (FREELIST_PAGE, "freelist")):
        if flags & flag:
            return name
    return "unknown<%02x>" % flags


class BboltError(Exception):
    """A file that is not a bbolt database, or a damaged one; the message says what is wrong."""


def fnv64a(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _U64
    return h


def looks_like_bbolt(path: str) -> bool:
    """True if either meta page of the file carries bbolt's magic (content, not the file name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(PAGE_HEADER_BYTES + 4)
            if len(head) == PAGE_HEADER_BYTES + 4 and _U32.unpack_from(head, PAGE_HEADER_BYTES)[0] == MAGIC:
                return True
            for size in _PAGE_SIZES:
                f.seek(size + PAGE_HEADER_BYTES)
                blob = f.read(4)
                if len(blob) == 4 and _U32.unpack(blob)[0] == MAGIC:
                    return True
    except OSError:
        return False
    return False


class _Meta:
    __slots__ = ("page_size", "root", "freelist", "high_water", "txid")

    def __init__(self, page_size: int, root: int, freelist: int, high_water: int, txid: int) -> None:
        self.page_size, self.root, self.freelist, self.high_water, self.txid = page_size, root, freelist, high_water, txid


class BboltFile:
    """A bbolt database opened read-only. `size` limits how much of the file is the database
    (an etcd snapshot file ends with a 32-byte sha256 that is not part of it).

    `seen` counts what reading met so far: "branch", "leaf", "overflow" pages and "inline" buckets.
    """

    def __init__(self, path: str, size: int | None = None) -> None:
        self.path = path
        try:
            self._file = open(path, "rb")
        except OSError as e:
            raise BboltError(f"cannot open {path}: {e.strerror}") from None
        try:
            file_size = os.fstat(self._file.fileno()).st_size
            self._size = file_size if size is None else min(size, file_size)
            if self._size < PAGE_HEADER_BYTES + META_BYTES:
                raise BboltError(f"{path} is not a bbolt database: only {self._size} bytes")
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._file.close()
            raise
        self.seen: Counter[str] = Counter()
        try:
            self.meta = self._choose_meta()
            self.page_size = self.meta.page_size
            self._pages = self._size // self.page_size
            if self.meta.high_water > self._pages:
                raise BboltError(f"{path} is damaged (truncated?): its meta page counts {self.meta.high_water} pages, "
                                 f"the file holds {self._pages}")
        except BaseException:
            self.close()
            raise
        self._pages = self.meta.high_water

    def close(self) -> None:
        self._map.close()
        self._file.close()

    def __enter__(self) -> BboltFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- meta
    def _read_meta(self, offset: int) -> tuple[_Meta | None, str]:
        if offset + PAGE_HEADER_BYTES + META_BYTES > self._size:
            return None, "beyond the end of the file"
        _, flags, _, _ = _PAGE_HEADER.unpack_from(self._map, offset)
        fields = _META.unpack_from(self._map, offset + PAGE_HEADER_BYTES)
        magic, version, page_size, _, root, _, freelist, high_water, txid, checksum = fields
        if magic != MAGIC:
            return None, "no bbolt magic"
        if version != VERSION:
            return None, f"version {version}, not {VERSION}"
        if flags & META_PAGE == 0:
            return None, f"page flags {flags:#x} are not a meta page's"
        body = bytes(self._map[offset + PAGE_HEADER_BYTES: offset + PAGE_HEADER_BYTES + META_BYTES - 8])
        if fnv64a(body) != checksum:
            return None, "checksum mismatch"
        if page_size < 512 or page_size & (page_size - 1):
            return None, f"page size {page_size} is not a power of two >= 512"
        return _Meta(page_size, root, freelist, high_water, txid), ""

    def _choose_meta(self) -> _Meta:
        meta0, why0 = self._read_meta(0)
        sizes = [meta0.page_size] if meta0 else []
        if _U32.unpack_from(self._map, PAGE_HEADER_BYTES)[0] == MAGIC:
            sizes.append(_U32.unpack_from(self._map, PAGE_HEADER_BYTES + 8)[0])  # meta 0's page size, even if its checksum fails
        sizes += [s for s in _PAGE_SIZES if s not in sizes]
        meta1, why1 = None, "not found"
        for size in sizes:
            if 0 < size < self._size:
                found, why = self._read_meta(size)
                if found is not None and found.page_size == size:
                    meta1, why1 = found, ""
                    break
                if why != "no bbolt magic":
                    why1 = why
        if meta0 is None and meta1 is None:
            if why0 == "no bbolt magic" and why1 in ("no bbolt magic", "not found"):
                raise BboltError(f"{self.path} is not a bbolt database (no bbolt magic in its meta pages)")
            raise BboltError(f"{self.path} is a damaged bbolt database: meta page 0: {why0}; meta page 1: {why1}")
        if meta0 is not None and meta1 is not None:
            if meta0.page_size != meta1.page_size:
                raise BboltError(f"{self.path} is damaged: its meta pages disagree on the page size")
            return meta0 if meta0.txid > meta1.txid else meta1
        return meta0 or meta1  # type: ignore[return-value]

    # --- pages
    def _page(self, pgid: int) -> tuple[int, int, int, int]:
        """(offset, flags, count, end offset) of a page in the file, checked."""
        if not 2 <= pgid < self._pages:
            raise BboltError(f"{self.path} is damaged: a reference to page {pgid}, outside pages 2..{self._pages - 1}")
        offset = pgid * self.page_size
        page_id, flags, count, overflow = _PAGE_HEADER.unpack_from(self._map, offset)
        if page_id != pgid:
            raise BboltError(f"{self.path} is damaged: page {pgid} says it is page {page_id}")
        if pgid + overflow >= self._pages:
            raise BboltError(f"{self.path} is damaged: page {pgid} overflows past the last page")
        if overflow:
            self.seen["overflow"] += overflow
        return offset, flags, count, offset + (overflow + 1) * self.page_size

    def _elements(self, buf, offset: int, flags: int, count: int, end: int, where: str) -> Iterator[tuple]:
        """Elements of a branch or leaf page at buf[offset:end]:
        branch: (key, child pgid); leaf: (key, value, element flags)."""
        if offset + PAGE_HEADER_BYTES + count * ELEMENT_BYTES > end:
            raise BboltError(f"{self.path} is damaged: {where} claims {count} elements, more than fit")
        base = offset + PAGE_HEADER_BYTES
        for i in range(count):
            elem = base + i * ELEMENT_BYTES
            if flags & BRANCH_PAGE:
                pos, ksize, child = _BRANCH_ELEMENT.unpack_from(buf, elem)
                vsize = 0
            else:
                eflags, pos, ksize, vsize = _LEAF_ELEMENT.unpack_from(buf, elem)
            start = elem + pos
            if start + ksize + vsize > end:
                raise BboltError(f"{self.path} is damaged: element {i} of {where} points past its page")
            key = bytes(buf[start:start + ksize])
            if flags & BRANCH_PAGE:
                yield key, child
            else:
                yield key, bytes(buf[start + ksize:start + ksize + vsize]), eflags

    def _walk(self, pgid: int, depth: int, budget: list[int]) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, value, element flags) of the subtree rooted at page pgid, in key order."""
        if depth > MAX_DEPTH:
            raise BboltError(f"{self.path} is damaged: its B+tree is deeper than {MAX_DEPTH} pages")
        budget[0] -= 1
        if budget[0] < 0:
            raise BboltError(f"{self.path} is damaged: a bucket reaches more pages than the file holds (a cycle?)")
        offset, flags, count, end = self._page(pgid)
        where = f"page {pgid}"
        if flags & BRANCH_PAGE:
            self.seen["branch"] += 1
            children = [child for _, child in self._elements(self._map, offset, flags, count, end, where)]
            for child in children:
                yield from self._walk(child, depth + 1, budget)
        elif flags & LEAF_PAGE:
            self.seen["leaf"] += 1
            yield from self._elements(self._map, offset, flags, count, end, where)
        else:
            raise BboltError(f"{self.path} is damaged: page {pgid} of a bucket has flags {flags:#x}, neither branch nor leaf")

    def _bucket_items(self, header: bytes, name: str) -> Iterator[tuple[bytes, bytes, int]]:
        if len(header) < BUCKET_HEADER_BYTES:
            raise BboltError(f"{self.path} is damaged: bucket {name} has a {len(header)}-byte header")
        root, _ = _BUCKET.unpack_from(header, 0)
        if root:
            yield from self._walk(root, 0, [self._pages])
            return
        self.seen["inline"] += 1
        if len(header) < BUCKET_HEADER_BYTES + PAGE_HEADER_BYTES:
            raise BboltError(f"{self.path} is damaged: inline bucket {name} has no page")
        _, flags, count, _ = _PAGE_HEADER.unpack_from(header, BUCKET_HEADER_BYTES)
        if not flags & LEAF_PAGE:
            raise BboltError(f"{self.path} is damaged: inline bucket {name} is not a leaf page (flags {flags:#x})")
        yield from self._elements(header, BUCKET_HEADER_BYTES, flags, count, len(header), f"inline bucket {name}")

    def _root_header(self) -> bytes:
        return _BUCKET.pack(self.meta.root, 0)

    def _find(self, path: tuple[bytes, ...]) -> bytes:
        header = self._root_header()
        for depth, name in enumerate(path):
            shown = b"/".join(path[:depth]).decode(errors="replace") or "(root)"
            for key, value, flags in self._bucket_items(header, shown):
                if key == name:
                    if not flags & BUCKET_LEAF_FLAG:
                        raise KeyError(f"{name!r} is a key, not a bucket")
                    header = value
                    break
                if key > name:
                    raise KeyError(name)
            else:
                raise KeyError(name)
        return header

    # --- integrity (bbolt's Tx.Check)
    def _freelist(self) -> tuple[list[int], int]:
        """(sorted free page ids, overflow) of the freelist page the meta names."""
        pgid = self.meta.freelist
        if not 2 <= pgid < self._pages:
            raise BboltError(f"{self.path} is damaged: its freelist page {pgid} is outside pages 2..{self._pages - 1}")
        offset = pgid * self.page_size
        _, flags, count, overflow = _PAGE_HEADER.unpack_from(self._map, offset)
        if not flags & FREELIST_PAGE:
            raise BboltError(f"{self.path} is damaged: invalid freelist page: {pgid}, page type is {page_type(flags)}")
        if pgid + overflow >= self._pages:
            raise BboltError(f"{self.path} is damaged: freelist page {pgid} overflows past the last page")
        end, start = offset + (overflow + 1) * self.page_size, offset + PAGE_HEADER_BYTES
        if count == 0xFFFF:
            count = struct.unpack_from("<Q", self._map, start)[0]
            start += 8
        if start + count * 8 > end:
            raise BboltError(f"{self.path} is damaged: freelist page {pgid} claims {count} ids, more than fit")
        return sorted(struct.unpack_from("<%dQ" % count, self._map, start)), overflow

    def check(self) -> list[str]:
        """What bbolt's Tx.Check reports, in its words ("page 7: multiple references", ...); empty for
        a sound file. Where bbolt would read past a page or loop (a page claiming another page's id,
        a reference past the high-water mark, a cycle), this says so and does not follow it."""
        problems: list[str] = []
        reachable: set[int] = {0, 1}
        freed: set[int] = set()
        synced = self.meta.freelist != NO_FREELIST
        if synced:
            ids, overflow = self._freelist()
            for pgid in ids:
                if pgid in freed:
                    problems.append(f"page {pgid}: already freed")
                freed.add(pgid)
            reachable.update(range(self.meta.freelist, self.meta.freelist + overflow + 1))
        self._check_bucket(self._root_header(), "(root)", 0, reachable, freed, problems)
        if synced:  # without a freelist, bbolt counts every unreachable page as free
            problems += [f"page {pgid}: unreachable unfreed" for pgid in range(self._pages)
                         if pgid not in reachable and pgid not in freed]
        return problems

    def _check_bucket(self, header: bytes, name: str, nesting: int, reachable: set[int], freed: set[int],
                      problems: list[str]) -> None:
        """bbolt's checkBucket: every page of the bucket (preorder), then each nested bucket in key order."""
        if nesting > MAX_DEPTH:
            raise BboltError(f"{self.path} is damaged: buckets nested deeper than {MAX_DEPTH}")
        if len(header) < BUCKET_HEADER_BYTES:
            raise BboltError(f"{self.path} is damaged: bucket {name} has a {len(header)}-byte header")
        root, _ = _BUCKET.unpack_from(header, 0)
        if root == 0:
            return  # inline: no pages of its own, and no nested buckets
        nested: list[tuple[bytes, bytes]] = []
        stack = [(root, 0)]
        while stack:
            pgid, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise BboltError(f"{self.path} is damaged: its B+tree is deeper than {MAX_DEPTH} pages")
            if pgid >= self._pages:
                problems.append(f"page {pgid}: out of bounds: {self._pages}")
                continue
            offset = pgid * self.page_size
            page_id, flags, count, overflow = _PAGE_HEADER.unpack_from(self._map, offset)
            if page_id != pgid:
                problems.append(f"page {pgid}: its header says it is page {page_id}")
                continue
            if pgid + overflow >= self._pages:
                problems.append(f"page {pgid + overflow}: out of bounds: {self._pages}")
                continue
            again = [i for i in range(pgid, pgid + overflow + 1) if i in reachable]
            problems += [f"page {i}: multiple references" for i in again]
            reachable.update(range(pgid, pgid + overflow + 1))
            if again:
                continue  # followed already: following it again could loop
            if pgid in freed:
                problems.append(f"page {pgid}: reachable freed")
            elif not flags & (BRANCH_PAGE | LEAF_PAGE):
                problems.append(f"page {pgid}: invalid type: {page_type(flags)}")
            if not flags & (BRANCH_PAGE | LEAF_PAGE):
                continue
            end, where = offset + (overflow + 1) * self.page_size, f"page {pgid}"
            if flags & BRANCH_PAGE:
                children = [child for _, child in self._elements(self._map, offset, flags, count, end, where)]
                stack += [(child, depth + 1) for child in reversed(children)]
            else:
                nested += [(k, v) for k, v, f in self._elements(self._map, offset, flags, count, end, where)
                           if f & BUCKET_LEAF_FLAG]
        for key, value in nested:
            self._check_bucket(value, key.decode(errors="replace"), nesting + 1, reachable, freed, problems)

    # --- public
    @property
    def size(self) -> int:
        """bbolt's Tx.Size(): the high-water mark times the page size (the database's logical size)."""
        return self.meta.high_water * self.page_size

    def bucket_root(self, *path: bytes) -> int:
        """The root page of the bucket at `path` (0: an inline bucket, kept in its parent's page)."""
        return _BUCKET.unpack_from(self._find(path), 0)[0]

    def root_entries(self) -> Iterator[tuple[bytes, bool]]:
        """(name, is a bucket) of every entry at the top level, in key order (etcd keeps only buckets there)."""
        for key, _, flags in self._bucket_items(self._root_header(), "(root)"):
            yield key, bool(flags & BUCKET_LEAF_FLAG)

    def buckets(self, *path: bytes) -> list[bytes]:
        """Names of the buckets at the top level (or inside the bucket at `path`), in order."""
        return [k for k, _, f in self._bucket_items(self._find(path), "/".join(p.decode(errors="replace") for p in path) or "(root)")
                if f & BUCKET_LEAF_FLAG]

    def has_bucket(self, *path: bytes) -> bool:
        try:
            self._find(path)
        except KeyError:
            return False
        return True

    def items(self, *path: bytes) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) of the bucket at `path`, in key order; a nested bucket's value is None.
        Raises KeyError for a bucket that does not exist."""
        name = "/".join(p.decode(errors="replace") for p in path)
        for key, value, flags in self._bucket_items(self._find(path), name):
            yield key, (None if flags & BUCKET_LEAF_FLAG else value)
