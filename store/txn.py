"""Txn requests, as etcd's apply.go runs them.

All compares, nested ones included, are evaluated against the txn's starting view
(compareToPath); then every op on the chosen path is checked (puts first, then
ranges) before anything is written, so a failing txn changes nothing.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from . import reads, writes
from .tables import StoreTxn
from .writes import WriteTxn

_OP_KINDS = ("request_range", "request_put", "request_delete_range", "request_txn")


@dataclass(frozen=True, slots=True)
class Path:
    """The branch a txn takes, and the paths of the nested txns in that branch."""

    succeeded: bool
    ops: list[tuple[str, dict]]
    nested: dict[int, "Path"]  # op index -> path of that request_txn


def choose_path(tables: StoreTxn, req: dict, at_rev: int) -> Path:
    succeeded = all(reads.compare_holds(tables, compare, at_rev)
                    for compare in req.get("compare", []))
    ops = [_unpack_op(op) for op in req.get("success" if succeeded else "failure", [])]
    nested = {index: choose_path(tables, op_req, at_rev)
              for index, (kind, op_req) in enumerate(ops) if kind == "request_txn"}
    return Path(succeeded, ops, nested)


def check_path(tables: StoreTxn, path: Path, current_rev: int, compact_rev: int) -> None:
    """etcd's checkRequests with checkPut, then with checkRange."""
    for kind, op_req in _path_ops(path):
        if kind == "request_put":
            writes.check_put_in_txn(tables, op_req, current_rev)
    for kind, op_req in _path_ops(path):
        if kind == "request_range":
            reads.check_range_revision(op_req, current_rev, compact_rev)


def execute_path(txn: WriteTxn, path: Path) -> dict:
    """A TxnResponse without revision; inner responses carry none either."""
    responses = []
    for index, (kind, op_req) in enumerate(path.ops):
        if kind == "request_range":
            response = reads.range_response(txn.tables, op_req, txn.read_rev)
            del response["revision"]
            responses.append({"response_range": response})
        elif kind == "request_put":
            responses.append({"response_put": writes.put(txn, op_req)})
        elif kind == "request_delete_range":
            responses.append({"response_delete_range": writes.delete_range(txn, op_req)})
        else:
            responses.append({"response_txn": execute_path(txn, path.nested[index])})
    return {"succeeded": path.succeeded, "responses": responses}


def _path_ops(path: Path) -> Iterator[tuple[str, dict]]:
    """The non-txn ops on the path in execution order."""
    for index, (kind, op_req) in enumerate(path.ops):
        if kind == "request_txn":
            yield from _path_ops(path.nested[index])
        else:
            yield kind, op_req


def _unpack_op(op: dict) -> tuple[str, dict]:
    if len(op) != 1 or next(iter(op)) not in _OP_KINDS:
        raise ValueError(f"a txn op must be one of {_OP_KINDS}: {op!r}")
    kind, op_req = next(iter(op.items()))
    return kind, op_req
