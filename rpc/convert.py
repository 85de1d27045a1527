"""Protobuf messages <-> the plain dicts that cross the actor bus.

Dicts use etcd's protobuf field names; a field at its default is left out, as
proto3 leaves it off the wire. Enums travel as ints, bytes as bytes.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def to_dict(msg: Message) -> dict[str, Any]:
    """Every set field of `msg`, recursively."""
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        if field.type == _MESSAGE:
            out[field.name] = [to_dict(v) for v in value] if _is_repeated(field) else to_dict(value)
        else:
            out[field.name] = list(value) if _is_repeated(field) else value
    return out


def from_dict(cls: type[Message], data: dict[str, Any]) -> Message:
    """Build a `cls` from a dict, ignoring keys that are not fields of it (e.g. "revision", "op")."""
    fields = cls.DESCRIPTOR.fields_by_name
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        field = fields.get(name)
        if field is None or value is None:
            continue
        if field.type == _MESSAGE:
            sub = field.message_type._concrete_class
            kwargs[name] = [from_dict(sub, v) for v in value] if _is_repeated(field) else from_dict(sub, value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated
