"""Go's encoding/json applied to etcd's gogoproto-generated structs.

The generated Go structs carry ``json:"<proto name>,omitempty"`` tags, so zero
values are left out, 64-bit integers are plain numbers and bytes are base64.
A oneof becomes an untagged interface field named after the oneof (CamelCase)
holding a wrapper struct whose single field is the CamelCase field name.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

from . import goutil


def camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


def _scalar(fd, v) -> str:
    t = fd.type
    if t == FieldDescriptor.TYPE_BYTES:
        return goutil.json_string(goutil.b64(v))
    if t == FieldDescriptor.TYPE_STRING:
        return goutil.json_string(v)
    if t == FieldDescriptor.TYPE_BOOL:
        return "true" if v else "false"
    if t == FieldDescriptor.TYPE_MESSAGE:
        return encode(v)
    return str(int(v))


def _is_empty(fd, v) -> bool:
    if _is_repeated(fd):
        return len(v) == 0
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return False  # only called for present message fields
    if fd.type in (FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_STRING):
        return len(v) == 0
    return not v


def _is_repeated(fd) -> bool:
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return rep
    return fd.label == FieldDescriptor.LABEL_REPEATED


def encode(msg) -> str:
    parts = []
    seen_oneofs = set()
    for fd in msg.DESCRIPTOR.fields:
        oneof = fd.containing_oneof
        if oneof is not None:
            if oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(oneof.name)
            which = msg.WhichOneof(oneof.name)
            if which is None:
                parts.append('"%s":null' % camel(oneof.name))
                continue
            inner_fd = msg.DESCRIPTOR.fields_by_name[which]
            inner = _scalar(inner_fd, getattr(msg, which))
            parts.append('"%s":{"%s":%s}' % (camel(oneof.name), camel(which), inner))
            continue
        v = getattr(msg, fd.name)
        if _is_repeated(fd):
            if len(v) == 0:
                continue
            parts.append('"%s":[%s]' % (fd.name, ",".join(_scalar(fd, x) for x in v)))
            continue
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if not msg.HasField(fd.name):
                continue
            parts.append('"%s":%s' % (fd.name, encode(v)))
            continue
        if _is_empty(fd, v):
            continue
        parts.append('"%s":%s' % (fd.name, _scalar(fd, v)))
    return "{" + ",".join(parts) + "}"
