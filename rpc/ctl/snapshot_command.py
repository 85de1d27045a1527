"""``snapshot save|status`` (ctlv3/command/snapshot_command.go and clientv3/snapshot, etcdctl 3.4.23).

``save`` streams Maintenance.Snapshot from one endpoint into ``FILE.part``, checks that a sha256
trailer came with it (etcd's size test), fsyncs and renames, logging as etcdctl's zap loggers do.
``status`` reads a petcd snapshot file (an LMDB store plus its sha256, see store/backup.py; it
refuses a file whose checksum does not match), or etcd's bbolt database (`etcdctl snapshot save`,
or a stopped member's `member/snap/db`), for which it prints what etcdctl 3.4 prints: bbolt's
integrity check, then the hash, revision, total keys and size etcd's v3Manager.Status computes
(see store/etcd_import.snapshot_status). ``restore`` takes a petcd snapshot file or etcd's bbolt
database (told apart by content), see store/etcd_import.py.
"""

from __future__ import annotations

import os
import time

from . import errors, goutil, pflag
from .cobra import Command

SHA256_BYTES = 32


def new_snapshot_command(run_for) -> Command:
    sc = Command("snapshot <subcommand>", "Manages etcd node snapshots")
    sc.add(
        Command("save <filename>", "Stores an etcd node backend snapshot to a given file", run=run_for("save")),
        Command("restore <filename> [options]", "Restores an etcd member snapshot to an etcd directory",
                run=run_for("restore"), flags=[
                    pflag.string_flag("data-dir", "", "Path to the data directory"),
                    pflag.string_flag("wal-dir", "", "Path to the WAL directory (use --data-dir if none given)"),
                    pflag.string_flag("initial-cluster", "default=http://localhost:2380", "Initial cluster configuration for restore bootstrap"),
                    pflag.string_flag("initial-cluster-token", "etcd-cluster", "Initial cluster token for the etcd cluster during restore bootstrap"),
                    pflag.string_flag("initial-advertise-peer-urls", "http://localhost:2380", "List of this member's peer URLs to advertise to the rest of the cluster"),
                    pflag.string_flag("name", "default", "Human-readable name for this member"),
                    pflag.bool_flag("skip-hash-check", False, "Ignore snapshot integrity hash value (required if copied from data directory)"),
                ]),
        Command("status <filename>", "Gets backend snapshot status of a given file",
                "When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.\n"
                "The items in the lists are hash, revision, total keys, total size.\n",
                run=run_for("status")),
    )
    return sc


def _go_float(x: float) -> str:
    """strconv.FormatFloat(x, 'f', -1, 64): the shortest digits, never an exponent."""
    text = repr(x)
    if "e" not in text:
        return text
    from decimal import Decimal
    return format(Decimal(text), "f")


def _log(level: str, caller: str, msg: str, fields: list[tuple[str, object]], epoch_ts: bool) -> None:
    """One zap JSON line on stderr: the snapshot manager's logger stamps epoch seconds, clientv3's ISO time."""
    from .client import zap_iso_ts

    ts = _go_float(time.time()) if epoch_ts else goutil.zap_string(zap_iso_ts())
    parts = ['"level":"%s"' % level, '"ts":%s' % ts, '"caller":"%s"' % caller, '"msg":%s' % goutil.zap_string(msg)]
    for name, value in fields:
        if isinstance(value, int) and not isinstance(value, bool):
            parts.append('"%s":%d' % (name, value))
        else:
            parts.append('"%s":%s' % (name, _go_float(value) if isinstance(value, float) else goutil.zap_string(str(value))))
    errors.err("{" + ",".join(parts) + "}\n")


def snapshot_save_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    from .client import RPCError, deadline_after
    from .printer import humanize_bytes

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "snapshot save expects one argument")
    cfg = ctl.client_settings(cmd)
    if len(cfg["endpoints"]) != 1:
        errors.exit_with_error(errors.EXIT_INTERRUPTED, "snapshot must be requested to one selected node, not multiple [%s]"
                               % " ".join(cfg["endpoints"]))
    # etcdctl bounds the whole download only when --command-timeout is given explicitly.
    timeout = ctl.root_flags.lookup("command-timeout")
    deadline = deadline_after(timeout.v) if timeout.changed else None
    client = ctl.must_client(cfg)
    path = args[0]
    part = path + ".part"
    try:
        f = os.fdopen(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
    except OSError as e:
        errors.exit_with_error(errors.EXIT_INTERRUPTED, "could not open %s (open %s: %s)" % (part, part, goutil.errno_text(e)))
    try:
        _log("info", "snapshot/v3_snapshot.go:119", "created temporary db file", [("path", part)], True)
        started = time.monotonic()
        responses = client.server_stream("Maintenance", "Snapshot", rpc_pb2.SnapshotRequest(), deadline)
        _log("info", "clientv3/maintenance.go:200", "opened snapshot stream; downloading", [], False)
        _log("info", "snapshot/v3_snapshot.go:127", "fetching snapshot", [("endpoint", cfg["endpoints"][0])], True)
        size = 0
        try:
            for resp in responses:
                f.write(resp.blob)
                size += len(resp.blob)
        except RPCError as e:
            _log("warn", "clientv3/maintenance.go:210", "failed to receive from snapshot stream; closing",
                 [("error", e.status_string())], False)
            errors.exit_with_error(errors.EXIT_INTERRUPTED, e.status_string())
        _log("info", "clientv3/maintenance.go:208", "completed snapshot read; closing", [], False)
        if size % 512 != SHA256_BYTES:
            errors.exit_with_error(errors.EXIT_INTERRUPTED, "sha256 checksum not found [bytes: %d]" % size)
        f.flush()
        os.fsync(f.fileno())
        f.close()
        _log("info", "snapshot/v3_snapshot.go:142", "fetched snapshot",
             [("endpoint", cfg["endpoints"][0]), ("size", humanize_bytes(size)), ("took", time.monotonic() - started)], True)
        os.rename(part, path)
        _log("info", "snapshot/v3_snapshot.go:152", "saved", [("path", path)], True)
    finally:
        f.close()
        if os.path.exists(part):
            os.remove(part)
    errors.out("Snapshot saved at %s\n" % path)


def snapshot_status_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.store.backup import BackupError, status

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "snapshot status requires exactly one argument")
    ctl.init_display(cmd)
    try:
        os.stat(args[0])
    except OSError as e:
        errors.exit_with_error(errors.EXIT_ERROR, "stat %s: %s" % (args[0], goutil.errno_text(e)))
    try:
        ds = status(args[0])
    except BackupError as e:
        errors.exit_with_error(errors.EXIT_ERROR, str(e))
    ctl.display.db_status(ds)


def snapshot_restore_command_func(ctl, cmd: Command, args: list[str]) -> None:
    """A new member's data dir from a snapshot file: the store with its history and leases, to be
    started as the first member of a new cluster with the same --name, --initial-cluster,
    --initial-cluster-token and --initial-advertise-peer-urls (petcd bootstraps its membership
    from those flags when it first starts, as a new cluster does). --wal-dir: the directory the
    member's Raft log is to live in (its --wal-dir), made here as etcd's restore makes it; the log
    itself is written when the member first starts."""
    from petcd.store.backup import BackupError, is_etcd_snapshot, restore, restore_etcd

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "snapshot restore requires exactly one argument")
    fs = cmd.flags()
    name = fs.lookup("name").v
    data_dir = fs.lookup("data-dir").v or name + ".etcd"
    wal_dir = fs.lookup("wal-dir").v
    skip_hash_check = fs.lookup("skip-hash-check").v
    from_etcd = is_etcd_snapshot(args[0])  # etcd's bbolt file (snapshot save, or member/snap/db)
    if skip_hash_check and not from_etcd:
        errors.exit_with_error(errors.EXIT_BAD_FEATURE, "snapshot restore --skip-hash-check is not supported by petcdctl (a petcd data dir is not a snapshot file)")
    cluster: dict[str, list[str]] = {}
    for item in [i for i in fs.lookup("initial-cluster").v.split(",") if i]:
        member, sep, url = item.partition("=")
        if not sep:
            errors.exit_with_error(errors.EXIT_ERROR, "missing = in %s" % item)  # no url given
        cluster.setdefault(member, []).append(url)
    if name not in cluster:
        errors.exit_with_error(errors.EXIT_ERROR, "couldn't find local name %r in the initial cluster configuration" % name)
    advertised = sorted(u for u in fs.lookup("initial-advertise-peer-urls").v.split(",") if u)
    if sorted(cluster[name]) != advertised:
        errors.exit_with_error(errors.EXIT_ERROR, "--initial-cluster has %s=%s but missing from --initial-advertise-peer-urls=%s"
                               % (name, ",".join(cluster[name]), ",".join(advertised)))
    if os.path.exists(data_dir):  # etcd's order: the data dir, then the wal dir
        errors.exit_with_error(errors.EXIT_ERROR, "data-dir %s exists" % goutil.quote(data_dir.encode()))
    if wal_dir and os.path.exists(wal_dir):
        errors.exit_with_error(errors.EXIT_ERROR, "wal-dir %s exists" % goutil.quote(wal_dir.encode()))
    member_dir = os.path.join(data_dir, "member")
    fields = [("path", args[0]), ("wal-dir", wal_dir or os.path.join(member_dir, "raft")), ("data-dir", data_dir), ("member-dir", member_dir)]
    _log("info", "snapshot/v3_snapshot.go:296", "restoring snapshot", fields, True)
    imported = None
    try:
        try:
            with open(args[0], "rb"):
                pass
        except OSError as e:  # as etcd says it (Go opens a directory, then fails to read it), before anything is made
            verb = "read" if isinstance(e, IsADirectoryError) else "open"
            raise BackupError("%s %s: %s" % (verb, args[0], goutil.errno_text(e))) from None
        os.makedirs(member_dir, mode=0o700)
        if from_etcd:
            imported = restore_etcd(args[0], os.path.join(member_dir, "mvcc"), skip_hash_check=skip_hash_check)
        else:
            restore(args[0], os.path.join(member_dir, "mvcc"))
        if wal_dir:
            os.makedirs(wal_dir, mode=0o700)
    except (BackupError, OSError) as e:
        import shutil
        for made in (data_dir, wal_dir):  # nothing half restored is left behind
            if made and os.path.isdir(made):
                shutil.rmtree(made, ignore_errors=True)
        errors.exit_with_error(errors.EXIT_ERROR, str(e) if isinstance(e, BackupError) else "%s: %s" % (e.filename, goutil.errno_text(e)))
    if imported is not None:
        _report_etcd_import(imported, fields)
    _log("info", "snapshot/v3_snapshot.go:309", "restored snapshot", fields, True)


def _report_etcd_import(imported, fields: list[tuple[str, object]]) -> None:
    """What came over from etcd's database."""
    _log("info", "petcdctl/snapshot_command.go", "imported etcd database", fields + [
        ("revision", imported.revision), ("compact-revision", imported.compact_revision),
        ("revisions", imported.revisions), ("keys", imported.keys), ("leases", imported.leases),
        ("keys-attached-to-leases", imported.attached), ("users", imported.users), ("roles", imported.roles),
        ("auth-enabled", imported.auth_enabled), ("alarms", imported.alarms)], True)
