"""Recorded histories: the operations clients saw, one JSON object per line.

File format (JSON lines; blank lines and lines starting with '#' are ignored)
----------------------------------------------------------------------------
Every line is one operation:

    {"process": str, "id": int, "kind": str, "invoke_ms": int,
     "complete_ms": int | null, "outcome": "ok" | "fail" | "info", ...kind-specific fields}

(process, id) names the operation and should be unique. invoke_ms is when the
client sent the request, complete_ms when it got the answer (null when it never
did). The outcome says what the client knows:
  "ok"    it took effect, and "result" holds the answer;
  "fail"  it certainly did not take effect (the checkers ignore it);
  "info"  unknown (a timeout, a lost connection): it may have taken effect at
          any time after invoke_ms -- even after complete_ms -- or never.

Bytes (keys, values) are written as a JSON string when they are valid UTF-8
and printable (`str.isprintable()`), else as {"b64": "<base64>"}; a string
always means its UTF-8 bytes. A map keyed by bytes is a JSON object when every
key is printable, else a list of [key, value] pairs (readers accept both).
"revision" is always the store revision of the response header (etcd's
`header.revision`), not a key's mod_revision.

KV kinds (checked for linearizability by `linearizability.py`); the answer is
in "result", present when outcome is "ok":
  put     {key, value}                       result {revision}
  get     {key}                              result {value | null, revision}
  cas     {key, expect: value | null (null = "key absent"), value}
                                             result {succeeded: bool, revision}
  delete  {key}                              result {deleted: int, revision}
  txn     {reads: [key], writes: {key: value | null (= delete)},
           guard: {key: expected value | null (= absent)}}
                                             result {succeeded: bool, values: {key: value | null}, revision}
          When every guard holds, the reads see the state before the writes,
          and the writes apply atomically; when one does not, nothing is read
          or written ("values" is then ignored). An empty guard always holds.
  "revision" may be left out of a result (the checker then ignores revisions
  for that operation).

Other kinds (one op per observed object; outcome normally "ok"):
  watch   {watch: {key_start, key_end: key | null (null = the single key
           key_start; "\\u0000" = every key >= key_start), start_revision: int
           (0 or null = "from now"), process: str (optional label of the
           watching client), filters: ["NOPUT" | "NODELETE"] (optional)},
           events: [{revision, type: "PUT" | "DELETE", key, value: value | null,
                     prev_value: value | null (optional: leave it out when the
                     watcher did not ask for prev_kv)}],
           responses: [[revision, ...], ...]   (the revisions of the events of
                     each response, in order; concatenated they equal the
                     revisions of "events"),
           resumes: [{response: int, start_revision: int, compacted?: int}]
                     (optional: the watcher reconnected before response
                     number `response` (an index into responses), asking for
                     start_revision; `compacted`: it was canceled because its
                     start was compacted, and resumed from that compact revision),
           progress_revision: int (optional: the watcher knows it has every
                     event up to this revision, e.g. from a progress notify)}
  lease   {lease_id, ttl_s (the granted TTL), granted_ms, keepalives_ms: [ms],
           keys: [key], revoked_ms?, key_deleted_revision?, key_deleted_ms?,
           key_seen_ms?: [ms], granted_answered_ms?, keepalives_answered_ms?: [ms],
           keepalives_unanswered_ms?: [ms], key_seen_sent_ms?: [ms]}
          granted_ms and keepalives_ms are when the grant and each keepalive
          that was answered with TTL > 0 were *sent* (granted_answered_ms and
          keepalives_answered_ms, in the same order, when they were answered);
          keepalives_unanswered_ms when each keepalive never answered was sent;
          revoked_ms when a revoke was sent; key_deleted_ms when the deletion
          of the keys was observed (e.g. a watch event), key_seen_ms when a
          read that found the keys present was answered (key_seen_sent_ms, in
          the same order, when it was sent).
  lock    {name, acquired_ms, released_ms | null (never released: held until
           its session ended), fence_revision (the create revision of the
           holder's lock key), writes: [{key, value, outcome, succeeded?: bool,
           revision?, invoke_ms?, complete_ms?, fence_revision? (defaults to
           the holder's)}]}
          invoke_ms of the lock op is when the lock was requested; each write
          is guarded by "the lock key's create_revision == fence_revision" and
          counts as accepted when its outcome is "ok" and succeeded is not false.

Unknown fields and kinds are kept as they are.

Sections (optional): a line "#petcd:NAME {json}" carries material about the run
that is not a client's operation; readers that only want the operations skip it
as a comment. `petcd sim run --history` writes them, `petcd check` uses them:
  #petcd:run {"command": str, "seed": int, "digest": str, "verdict": str}
              the run that recorded the history
  #petcd:options {"lease_bound_ms": int}
              the checkers' settings for this history (a flag of `petcd check` wins);
              lease_bound_ms is the bound for judging leases without the leaders
              and faults (`petcd check --lease-flat`)
  #petcd:committed {revision, type, key, value, prev_value}
              one committed event, in revision order: the watch checker's truth
              (what `petcd check --committed FILE` gives)
  #petcd:fault {kind, detail, from_ms, to_ms}     a fault, start to end (the report's bands)
  #petcd:leader {member, term, from_ms, to_ms}    a member led, in a term (to_ms null: to the end)
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KV_KINDS = ("put", "get", "cas", "delete", "txn")
OUTCOMES = ("ok", "fail", "info")


class HistoryError(ValueError):
    """A malformed history (the message names the line)."""


# ---------------------------------------------------------------------------
# bytes <-> JSON
_B, _BN, _BL, _BMAP = "bytes", "bytes?", "bytes[]", "bytes map"

SCHEMA: dict[str, dict[str, Any]] = {
    "put": {"key": _B, "value": _B},
    "get": {"key": _B, "result": {"value": _BN}},
    "cas": {"key": _B, "expect": _BN, "value": _B},
    "delete": {"key": _B},
    "txn": {"reads": _BL, "writes": _BMAP, "guard": _BMAP, "result": {"values": _BMAP}},
    "watch": {
        "watch": {"key_start": _B, "key_end": _BN},
        "events": [{"key": _B, "value": _BN, "prev_value": _BN}],
    },
    "lease": {"keys": _BL},
    "lock": {"name": _B, "writes": [{"key": _B, "value": _BN}]},
}


def printable(b: bytes) -> str | None:
    """The UTF-8 text of b when it is printable, else None."""
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return s if s.isprintable() else None


def encode_bytes(b: bytes | None) -> Any:
    if b is None:
        return None
    s = printable(b)
    return s if s is not None else {"b64": base64.b64encode(b).decode("ascii")}


def decode_bytes(x: Any) -> bytes | None:
    if x is None:
        return None
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, dict) and set(x) == {"b64"}:
        return base64.b64decode(x["b64"], validate=True)
    raise HistoryError(f"not bytes: {x!r}")


def _decode_map(x: Any) -> dict[bytes, bytes | None]:
    if x is None:
        return {}
    if isinstance(x, Mapping):
        return {decode_bytes(k): decode_bytes(v) for k, v in x.items()}  # type: ignore[misc]
    if isinstance(x, list):
        out: dict[bytes, bytes | None] = {}
        for pair in x:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise HistoryError(f"not a [key, value] pair: {pair!r}")
            out[decode_bytes(pair[0])] = decode_bytes(pair[1])  # type: ignore[index]
        return out
    raise HistoryError(f"not a map: {x!r}")


def _encode_map(m: Mapping[bytes, bytes | None]) -> Any:
    if all(printable(k) is not None for k in m):
        return {printable(k): encode_bytes(v) for k, v in m.items()}
    return [[encode_bytes(k), encode_bytes(v)] for k, v in m.items()]


def _walk(value: Any, spec: Any, decode: bool) -> Any:
    if value is None:
        return None
    if spec in (_B, _BN):
        return decode_bytes(value) if decode else encode_bytes(value)
    if spec == _BL:
        if not isinstance(value, list):
            raise HistoryError(f"not a list of bytes: {value!r}")
        return [decode_bytes(v) if decode else encode_bytes(v) for v in value]
    if spec == _BMAP:
        return _decode_map(value) if decode else _encode_map(value)
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise HistoryError(f"not a list: {value!r}")
        return [_walk(v, spec[0], decode) for v in value]
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise HistoryError(f"not an object: {value!r}")
        return {k: (_walk(v, spec[k], decode) if k in spec else v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------
@dataclass(slots=True)
class Op:
    """One recorded operation. `fields` holds the kind-specific fields with bytes decoded."""

    process: str
    id: int
    kind: str
    invoke_ms: int
    complete_ms: int | None
    outcome: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    @property
    def result(self) -> dict[str, Any] | None:
        return self.fields.get("result")

    @property
    def ref(self) -> tuple[str, int]:
        return (self.process, self.id)

    def label(self) -> str:
        """A short human description, e.g. `p1#4 put k='a' v='x' -> ok rev=7`."""
        return f"{self.process}#{self.id} {describe(self)}"


def show(b: bytes | None) -> str:
    """bytes for humans: 'text' when printable, else 0x<hex>; None as "nil"."""
    if b is None:
        return "nil"
    s = printable(b)
    if s is not None:
        return repr(s)
    return "0x" + b.hex()


def _show_map(m: Mapping[bytes, bytes | None] | None) -> str:
    return "{" + ", ".join(f"{show(k)}: {show(v)}" for k, v in (m or {}).items()) + "}"


def describe(op: Op) -> str:
    """The operation and its answer, without its name."""
    f, r, k = op.fields, op.result or {}, op.kind
    if k == "put":
        s = f"put {show(f.get('key'))}={show(f.get('value'))}"
    elif k == "get":
        s = f"get {show(f.get('key'))}"
    elif k == "cas":
        s = f"cas {show(f.get('key'))} {show(f.get('expect'))}->{show(f.get('value'))}"
    elif k == "delete":
        s = f"delete {show(f.get('key'))}"
    elif k == "txn":
        s = (
            f"txn guard={_show_map(f.get('guard'))} reads=[{', '.join(show(x) for x in f.get('reads') or [])}]"
            f" writes={_show_map(f.get('writes'))}"
        )
    elif k == "watch":
        w = f.get("watch") or {}
        s = f"watch [{show(w.get('key_start'))}, {show(w.get('key_end'))}) from rev {w.get('start_revision')}: {len(f.get('events') or [])} events"
    elif k == "lease":
        s = f"lease {f.get('lease_id')} ttl={f.get('ttl_s')}s keys=[{', '.join(show(x) for x in f.get('keys') or [])}]"
    elif k == "lock":
        s = f"lock {show(f.get('name'))} fence={f.get('fence_revision')} held {f.get('acquired_ms')}..{f.get('released_ms')}"
    else:
        s = k
    s += f" -> {op.outcome}"
    if op.outcome == "ok" and k in KV_KINDS and r:
        if k == "get":
            s += f" {show(r.get('value'))}"
        elif k in ("cas", "txn"):
            s += " succeeded" if r.get("succeeded") else " not succeeded"
            if k == "txn" and r.get("succeeded") and f.get("reads"):
                s += f" values={_show_map(r.get('values'))}"
        elif k == "delete":
            s += f" deleted={r.get('deleted')}"
        if r.get("revision") is not None:
            s += f" rev={r['revision']}"
    return s


# ---------------------------------------------------------------------------
def op_from_json(obj: Mapping[str, Any]) -> Op:
    """An `Op` from one decoded JSON line (raises HistoryError when malformed)."""
    if not isinstance(obj, Mapping):
        raise HistoryError("an operation must be a JSON object")
    for name in ("process", "id", "kind", "invoke_ms", "outcome"):
        if name not in obj:
            raise HistoryError(f"missing field {name!r}")
    outcome = obj["outcome"]
    if outcome not in OUTCOMES:
        raise HistoryError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
    kind = obj["kind"]
    rest = {k: v for k, v in obj.items() if k not in ("process", "id", "kind", "invoke_ms", "complete_ms", "outcome")}
    fields = _walk(rest, SCHEMA.get(kind, {}), True)
    op = Op(str(obj["process"]), int(obj["id"]), str(kind), int(obj["invoke_ms"]), obj.get("complete_ms"), outcome, fields)
    if op.complete_ms is not None:
        op.complete_ms = int(op.complete_ms)
    _validate(op)
    return op


def _validate(op: Op) -> None:
    if op.kind not in KV_KINDS:
        return
    if op.kind in ("put", "get", "cas", "delete") and "key" not in op.fields:
        raise HistoryError(f"{op.kind} without a key")
    if op.kind in ("put", "cas") and op.fields.get("value") is None:
        raise HistoryError(f"{op.kind} without a value")
    if op.kind == "cas" and "expect" not in op.fields:
        raise HistoryError("cas without expect")
    if op.outcome == "ok":
        if op.complete_ms is None:
            raise HistoryError("an ok operation needs complete_ms")
        if not isinstance(op.result, dict):
            raise HistoryError("an ok operation needs a result object")
        if op.kind in ("cas", "txn") and "succeeded" not in op.result:
            raise HistoryError(f"{op.kind} result without succeeded")
        if op.kind == "delete" and "deleted" not in op.result:
            raise HistoryError("delete result without deleted")
        if op.kind == "get" and "value" not in op.result:
            raise HistoryError("get result without value")
    if op.complete_ms is not None and op.complete_ms < op.invoke_ms:
        raise HistoryError("complete_ms before invoke_ms")


def op_to_json(op: Op) -> dict[str, Any]:
    out: dict[str, Any] = {
        "process": op.process,
        "id": op.id,
        "kind": op.kind,
        "invoke_ms": op.invoke_ms,
        "complete_ms": op.complete_ms,
        "outcome": op.outcome,
    }
    out.update(_walk(op.fields, SCHEMA.get(op.kind, {}), False))
    return out


def make_op(
    process: str, id: int, kind: str, invoke_ms: int, complete_ms: int | None, outcome: str = "ok", **fields: Any
) -> Op:
    """Build an Op in Python; bytes fields may be given as str (UTF-8) or bytes."""
    obj = {"process": process, "id": id, "kind": kind, "invoke_ms": invoke_ms, "complete_ms": complete_ms, "outcome": outcome}
    obj.update(fields)
    return op_from_json(obj)


def parse_history(lines: Iterable[str]) -> list[Op]:
    ops: list[Op] = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            ops.append(op_from_json(json.loads(line)))
        except json.JSONDecodeError as e:
            raise HistoryError(f"line {n}: not JSON: {e}") from None
        except (HistoryError, ValueError, TypeError) as e:
            raise HistoryError(f"line {n}: {e}") from None
    return ops


def load_history(path: str | Path) -> list[Op]:
    """Read a JSON-lines history file (see the module docstring for the format)."""
    with open(path, encoding="utf-8") as f:
        return parse_history(f)


SECTION_PREFIX = "#petcd:"
SECTIONS = ("run", "options", "committed", "fault", "leader")
_EVENT_BYTES = ("key", "value", "prev_value")


def load_sections(path: str | Path) -> dict[str, list[Any]]:
    """The "#petcd:NAME {json}" lines of a history file, by NAME (each a list of the decoded objects).

    Committed events keep their bytes encoded (str or {"b64"}), as `watch.Event.of` reads them.
    """
    out: dict[str, list[Any]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.startswith(SECTION_PREFIX):
                continue
            name, _, body = line[len(SECTION_PREFIX):].partition(" ")
            try:
                out.setdefault(name.strip(), []).append(json.loads(body))
            except json.JSONDecodeError as e:
                raise HistoryError(f"line {n}: #petcd:{name.strip()} is not followed by JSON: {e}") from None
    return out


def _section_line(name: str, obj: Any) -> str:
    if name == "committed":
        obj = {k: (encode_bytes(v) if k in _EVENT_BYTES and isinstance(v, bytes) else v) for k, v in obj.items()}
    return f"{SECTION_PREFIX}{name} " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"


def dump_history(ops: Iterable[Op], path: str | Path, sections: Mapping[str, Iterable[Any]] | None = None) -> None:
    """Write ops as JSON lines; `load_history` reads them back equal.

    `sections` (name -> objects) go first, as "#petcd:NAME {json}" lines (see the module docstring).
    """
    with open(path, "w", encoding="utf-8") as f:
        for name, objs in (sections or {}).items():
            for obj in objs:
                f.write(_section_line(name, obj))
        for op in ops:
            f.write(json.dumps(op_to_json(op), separators=(",", ":"), ensure_ascii=False))
            f.write("\n")


def kv_counts(history: Iterable[Op]) -> dict[str, int]:
    """The KV operations of a history by outcome, and the ones the linearizability checker judges."""
    c = {"ops": 0, "ok": 0, "failed": 0, "indeterminate": 0, "indeterminate_reads": 0}
    for op in history:
        if op.kind not in KV_KINDS:
            continue
        c["ops"] += 1
        c["ok" if op.outcome == "ok" else "failed" if op.outcome == "fail" else "indeterminate"] += 1
        if op.outcome == "info" and (op.kind == "get" or (op.kind == "txn" and not op.get("writes"))):
            c["indeterminate_reads"] += 1
    c["judged"] = c["ok"] + c["indeterminate"] - c["indeterminate_reads"]
    return c


def explain_kv_counts(history: Iterable[Op]) -> str:
    """One sentence on what the KV counts mean and why ok + indeterminate may differ from what was judged."""
    c = kv_counts(history)
    s = (f"{c['ops']} KV operations: {c['ok']} ok (took effect), {c['failed']} failed (certainly did not take effect: "
         f"not judged), {c['indeterminate']} indeterminate (no answer: may or may not have taken effect); "
         f"linearizability judges {c['judged']} = {c['ok']} ok + {c['indeterminate']} indeterminate")
    if c["indeterminate_reads"]:
        s += f" - {c['indeterminate_reads']} indeterminate reads (a read without an answer changes nothing)"
    return s
