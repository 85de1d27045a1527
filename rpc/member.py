"""The supervisor: starts one member as its set of processes and keeps them as one.

A member is a Raft actor, an apply actor, a watch broadcaster, a lease
reaper and a gateway, each its own OS process, talking over ZeroMQ ipc sockets. If any of them dies, the supervisor
stops the rest and exits non-zero (a half-dead member is worse than a dead
one); on SIGTERM/SIGINT it stops them all and exits 0. Each child makes itself
die with the supervisor (PR_SET_PDEATHSIG, actors/supervised.py), so a `kill -9`
of the supervisor does not leave orphans serving.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from petcd.actors.runtime_log import LogLine
from petcd.actors.proc_runtime import EXIT_MEMBER_STOPPED, peer_endpoint
from petcd.rpc.config import ConfigError, ServerConfig, host_port
from petcd.rpc.corrupt import InconsistentData, PeerTLS, initial_check
from petcd.store.fsync import fsync_dir
from petcd.store.raftlog import RaftLogError, has_raft_log
from petcd.rpc.member_ids import cluster_id, member_id
from petcd.rpc.peer_tls import client_context, server_context
from petcd.store.mvcc import DEFAULT_QUOTA_BYTES, MvccStore, map_size_for_quota

_STOP_GRACE_S = 10.0


@dataclass(slots=True)
class _Child:
    role: str
    proc: subprocess.Popen[bytes]


def _check_port_free(host_port_str: str) -> None:
    host, _, port = host_port_str.rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # As the real listeners do: a port whose old connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), int(port)))
        except OSError as e:
            raise ConfigError(f"listen tcp {host_port_str}: bind: {e.strerror.lower() if e.strerror else e}") from None


def _prepare_data_dir(path: str) -> str:
    member_dir = os.path.join(path, "member")
    try:
        os.makedirs(member_dir, mode=0o700, exist_ok=True)
        probe = os.path.join(member_dir, ".write-probe")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"cannot access data directory {path}: {e.strerror}") from None
    return member_dir


def _identity(member_dir: str, fresh_id: int) -> int:
    """The member id stored in the data dir, or `fresh_id` stored there for next time."""
    path = os.path.join(member_dir, "identity.json")
    try:
        with open(path) as f:
            return int(json.load(f)["member_id"], 16)
    except FileNotFoundError:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"member_id": f"{fresh_id:x}"}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(member_dir)  # the rename itself is durable only once the directory is synced
        return fresh_id


def _client_tls(cfg: ServerConfig, log: LogLine) -> dict[str, object]:
    """The gateway spec's client TLS keys, after etcd's start checks (embed.configureClientListeners):
    certificates from the flags, or --auto-tls's self-signed one; loaded once here so that a bad
    file is a start error. Raises ConfigError."""
    cert_file, key_file = cfg.cert_file, cfg.key_file
    if cfg.auto_tls:
        if cfg.client_tls_given():
            log("warn", "ignoring client auto TLS since certs given")
        else:
            cert_file, key_file = _self_cert(os.path.join(cfg.data_dir, "fixtures", "client"), [urlsplit(u).hostname or "" for u in cfg.client_urls()])
    tls_urls = cfg.tls_client_urls()
    for url in [*cfg.client_urls(), *cfg.client_http_urls()]:
        if url not in tls_urls and cfg.client_tls_given():
            log("warn", "scheme is HTTP while key and cert files are present; ignoring key and cert files", client_url=url)
        if url not in tls_urls and cfg.client_cert_auth:
            log("warn", "scheme is HTTP while --client-cert-auth is enabled; ignoring client cert auth for this URL", client_url=url)
    if tls_urls:
        from petcd.rpc.front import server_tls_context  # what the gateway will build

        try:
            server_tls_context(cert_file, key_file, cfg.trusted_ca_file, cfg.client_cert_auth)
        except OSError as e:
            raise ConfigError(f"cannot load the client TLS files (--cert-file {cert_file}, --key-file {key_file}, "
                              f"--trusted-ca-file {cfg.trusted_ca_file or '-'}): {e.strerror or e}") from None
        log("info", "starting with client TLS", cert_file=cert_file, key_file=key_file, trusted_ca_file=cfg.trusted_ca_file,
            client_cert_auth=cfg.client_cert_auth)
    return {
        "tls_listen": [host_port(u) for u in tls_urls],
        "cert_file": os.path.abspath(cert_file) if cert_file else "",
        "key_file": os.path.abspath(key_file) if key_file else "",
        "trusted_ca_file": os.path.abspath(cfg.trusted_ca_file) if cfg.trusted_ca_file else "",
        "client_cert_auth": cfg.client_cert_auth,
    }


def _peer_tls(cfg: ServerConfig, log: LogLine, sock_dir: str, raft_socket: str) -> tuple[dict[str, object], socket.socket] | None:
    """The peer TLS tunnel's spec (rpc/peer_tls.py) and the loopback socket it serves SOCKS5 on
    for the Raft actor, bound here so the Raft actor knows its port before either starts; None
    without peer TLS. Certificates are loaded once here so that a bad file is a start error."""
    for url in cfg.listen_peer_urls.split(","):
        if url.strip() and urlsplit(url.strip()).scheme == "http" and cfg.peer_tls_given():
            log("warn", "scheme is HTTP while key and cert files are present; ignoring key and cert files", peer_url=url.strip())
    if not cfg.peer_tls():
        return None
    cert_file, key_file = cfg.peer_cert_file, cfg.peer_key_file
    if cfg.peer_auto_tls and not cfg.peer_tls_given():
        hosts = [urlsplit(u.strip()).hostname or "" for u in cfg.listen_peer_urls.split(",") if u.strip()]
        cert_file, key_file = _self_cert(os.path.join(cfg.data_dir, "fixtures", "peer"), hosts)
    try:
        server_context(cert_file, key_file, cfg.peer_trusted_ca_file, cfg.peer_client_cert_auth)
        client_context(cert_file, key_file, cfg.peer_trusted_ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load the peer TLS files (--peer-cert-file {cert_file}, --peer-key-file {key_file}, "
                          f"--peer-trusted-ca-file {cfg.peer_trusted_ca_file or '-'}): {getattr(e, 'strerror', None) or e}") from None
    socks = socket.socket()
    socks.bind(("127.0.0.1", 0))
    socks.set_inheritable(True)
    log("info", "starting with peer TLS", cert_file=cert_file, key_file=key_file, trusted_ca_file=cfg.peer_trusted_ca_file,
        client_cert_auth=cfg.peer_client_cert_auth, allowed_cn=cfg.peer_cert_allowed_cn)
    spec = {
        "listen": [host_port(u.strip()) for u in cfg.listen_peer_urls.split(",") if u.strip()],
        "raft_socket": raft_socket, "socks_fd": socks.fileno(), "socks_proxy": "127.0.0.1:%d" % socks.getsockname()[1],
        "cert_file": os.path.abspath(cert_file), "key_file": os.path.abspath(key_file),
        "trusted_ca_file": os.path.abspath(cfg.peer_trusted_ca_file) if cfg.peer_trusted_ca_file else "",
        "client_cert_auth": cfg.peer_client_cert_auth, "allowed_cn": cfg.peer_cert_allowed_cn, "log_level": cfg.log_level,
    }
    return spec, socks


def _peer_tls_files(tls: dict[str, object]) -> PeerTLS:
    """The client TLS files the corruption checks dial peers' https client URLs with."""
    return PeerTLS(str(tls["trusted_ca_file"]), str(tls["cert_file"]), str(tls["key_file"]))


def _self_cert(dirpath: str, hosts: list[str]) -> tuple[str, str]:
    """etcd's transport.SelfCert: <dir>/cert.pem and key.pem, kept if both exist, else a new
    self-signed ECDSA P-521 certificate for the listen hosts (IP or DNS names), valid a year."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cert_path, key_path = os.path.join(dirpath, "cert.pem"), os.path.join(dirpath, "key.pem")
    try:
        os.makedirs(dirpath, mode=0o700, exist_ok=True)
        if os.path.exists(cert_path) and os.path.exists(key_path):
            return cert_path, key_path
        key = ec.generate_private_key(ec.SECP521R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcd")])
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(int.from_bytes(os.urandom(16), "big") >> 1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(key, hashes.SHA512())
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    except OSError as e:
        raise ConfigError(f"cannot create the auto-tls certificate in {dirpath}: {e.strerror}") from None
    return cert_path, key_path


def run(cfg: ServerConfig) -> int:
    log = LogLine(cfg.log_level if cfg.log_level in ("debug", "info", "warn", "error") else "error", actor="supervisor")
    peers = cfg.peers()
    ids = {name: member_id(urls, cfg.initial_cluster_token) for name, urls in peers.items()}
    listen = [host_port(u) for u in cfg.client_urls()]
    http_listen = [host_port(u) for u in cfg.client_http_urls()]
    peer_binds = [peer_endpoint(u) for u in cfg.listen_peer_urls.split(",") if u.strip()]
    for hp in listen + http_listen + [e.removeprefix("tcp://") for e in peer_binds] + [host_port(u) for u in _split(cfg.listen_metrics_urls)]:
        _check_port_free(hp)
    member_dir = _prepare_data_dir(cfg.data_dir)
    # A restarted member keeps the id it was born with, whatever the flags say now (as etcd does).
    my_id = _identity(member_dir, ids[cfg.name])
    my_hex = f"{my_id:x}"
    raft_dir = os.path.abspath(cfg.wal_dir) if cfg.wal_dir else os.path.join(member_dir, "raft")
    restarted = my_id != ids[cfg.name] or has_raft_log(raft_dir)
    tls = _client_tls(cfg, log)
    map_size = map_size_for_quota(cfg.quota_backend_bytes)
    quota = 0 if cfg.quota_backend_bytes < 0 else cfg.quota_backend_bytes or DEFAULT_QUOTA_BYTES
    compaction_mode, compaction_retention = cfg.auto_compaction()
    MvccStore(os.path.join(member_dir, "mvcc"), map_size_bytes=map_size).close()  # exists before the gateway opens it read-only
    for leftover in glob.glob(os.path.join(member_dir, "backup-*")):
        os.remove(leftover)  # a snapshot copy whose stream a crash cut short (see store/backup.py)
    request_timeout_s = 5 + 2 * cfg.election_timeout / 1000  # etcd's ReqTimeout
    if cfg.experimental_initial_corrupt_check and restarted:
        # Before any process of the member starts, as etcd's CheckInitialHashKV (rpc/corrupt.py).
        try:
            initial_check(member_dir, raft_dir, my_hex, map_size, _peer_tls_files(tls), request_timeout_s, log)
        except InconsistentData as e:
            log("fatal", "discovery failed", error=str(e))
            return 1
        except RaftLogError as e:
            log("fatal", "the raft log cannot be opened", error=str(e))
            return 1

    sock_dir = tempfile.mkdtemp(prefix="petcd-")
    # With peer TLS the tunnel owns the peer ports and reaches the Raft actor on its ipc socket.
    peer_tls = _peer_tls(cfg, log, sock_dir, os.path.join(sock_dir, "raft"))
    endpoints = {f"{my_hex}/{role}": f"ipc://{sock_dir}/{role}" for role in ("raft", "apply", "watch", "lease", "gw0")}
    for name, urls in peers.items():
        if name != cfg.name:
            endpoints[f"{ids[name]:x}/raft"] = peer_endpoint(urls[0])
    new_cluster = cfg.initial_cluster_state == "new" and not restarted
    initial = {f"{ids[n]:x}": {"name": n, "peer_urls": peers[n], "client_urls": []} for n in peers} if new_cluster else {}
    common = {"endpoints": endpoints, "log_level": cfg.log_level, "supervisor_pid": os.getpid()}
    raft_config = {
        "member_id": my_hex,
        "data_dir": member_dir,
        "log_dir": raft_dir,
        "cluster_id": cluster_id(list(ids.values())) if new_cluster else 0,
        "initial_members": initial,
        "name": cfg.name,
        "client_urls": _split(cfg.advertise_client_urls),
        "heartbeat_interval_ms": cfg.heartbeat_interval,
        "election_timeout_ms": cfg.election_timeout,
        "snapshot_count": cfg.snapshot_count,
    }
    specs = {
        "raft": ["-m", "petcd.actors.proc_runtime", "raft", json.dumps({
            **common, "address": f"{my_hex}/raft", "binds": [] if peer_tls else peer_binds,
            "socks_proxy": peer_tls[0]["socks_proxy"] if peer_tls else "",
            "fault_file": cfg.experimental_peer_fault_file, "config": raft_config})],
        "apply": ["-m", "petcd.actors.proc_runtime", "apply", json.dumps({**common, "address": f"{my_hex}/apply", "config": {
            "member_id": my_hex, "data_dir": member_dir, "map_size_bytes": map_size}})],
        "watch": ["-m", "petcd.actors.proc_runtime", "watch", json.dumps({**common, "address": f"{my_hex}/watch", "config": {
            "member_id": my_hex, "progress_notify_interval_ms": cfg.watch_progress_notify_interval_ms}})],
        "lease": ["-m", "petcd.actors.proc_runtime", "lease", json.dumps({**common, "address": f"{my_hex}/lease", "config": {
            "member_id": my_hex, "auto_compaction_mode": compaction_mode, "auto_compaction_retention": compaction_retention,
            "corrupt_check_interval_ms": cfg.corrupt_check_time_ms}})],
        "gw0": ["-m", "petcd.rpc.gateway", json.dumps({**common, "address": f"{my_hex}/gw0", "raft_address": f"{my_hex}/raft",
            "mvcc_dir": os.path.join(member_dir, "mvcc"), "member_id": my_id, "cluster_token": cfg.initial_cluster_token,
            "listen": listen, "grpc_socket": os.path.join(sock_dir, "grpc"), "max_txn_ops": cfg.max_txn_ops, "max_request_bytes": cfg.max_request_bytes,
            "quota_bytes": quota, "map_size_bytes": map_size, "request_timeout_s": request_timeout_s,
            "metrics_listen": [host_port(u) for u in _split(cfg.listen_metrics_urls)], "http_listen": http_listen,
            "min_lease_ttl_s": -(-3 * cfg.election_timeout // 2000), **tls,
            "auth_token": cfg.auth_token, "auth_token_ttl_s": cfg.auth_token_ttl, "bcrypt_cost": cfg.bcrypt_cost,
            "grpc_server": cfg.experimental_grpc_server})],
    }
    pass_fds: dict[str, tuple[int, ...]] = {}
    if peer_tls:
        specs = {"peer_tls": ["-m", "petcd.rpc.peer_tls", json.dumps({**peer_tls[0], "supervisor_pid": os.getpid()})], **specs}
        pass_fds["peer_tls"] = (peer_tls[1].fileno(),)
    stopping = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log("info", "starting member", name=cfg.name, member_id=my_hex, data_dir=cfg.data_dir, listen_client_urls=cfg.listen_client_urls)
    children: list[_Child] = []
    try:
        for role, args in specs.items():
            # No preexec_fn: it would make this a fork() while gRPC's threads may run (see actors/supervised.py).
            proc = subprocess.Popen([sys.executable, *args], pass_fds=pass_fds.get(role, ()))
            children.append(_Child(role, proc))
        exit_code = 0
        while not stopping:
            dead = [c for c in children if c.proc.poll() is not None]
            if dead:
                if all(c.proc.returncode == EXIT_MEMBER_STOPPED for c in dead):
                    log("warn", "the member stopped itself (removed from the cluster)")
                    break
                for c in dead:
                    log("error", "member process exited; stopping the member", process=c.role, exit_code=c.proc.returncode)
                exit_code = 1
                break
            time.sleep(0.1)
        return exit_code
    finally:
        _stop_all(children)
        if peer_tls:
            peer_tls[1].close()
        shutil.rmtree(sock_dir, ignore_errors=True)
        log("info", "member stopped", name=cfg.name)


def _stop_all(children: list[_Child]) -> None:
    for c in children:
        if c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for c in children:
        try:
            c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait()


def _split(csv: str) -> list[str]:
    return [u.strip() for u in csv.split(",") if u.strip()]
