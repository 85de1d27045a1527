"""Start throw-away real etcd (3.4) servers for tests.

Every server started here advertises the same peer URL, so independent
single-node servers get the same member ID and cluster ID (etcd derives both
from the advertised peer URLs and the cluster token).  Two fresh servers fed
the same requests are then indistinguishable, down to protobuf bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from petcd.sim.ports import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"

# Advertised (never dialled: single-member clusters talk to no peer).
ADVERTISED_PEER_URL = "http://127.0.0.1:2380"


def closed_port() -> int:
    """A local port nothing listens on (connections are refused)."""
    return free_port()


class EtcdServer:
    def __init__(self, extra_args: list[str] | None = None):
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix="petcd-etcd-", dir=base)
        self.client_port = free_port()
        self.peer_port = free_port()

    @property
    def endpoint(self) -> str:
        return "127.0.0.1:%d" % self.client_port

    def start(self, timeout: float = 15.0) -> "EtcdServer":
        url = "http://127.0.0.1:%d" % self.client_port
        args = [
            ETCD, "--name", "default", "--data-dir", os.path.join(self.dir, "data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", "http://127.0.0.1:%d" % self.peer_port,
            "--initial-advertise-peer-urls", ADVERTISED_PEER_URL,
            "--initial-cluster", "default=" + ADVERTISED_PEER_URL,
            "--initial-cluster-token", "petcd-test",
            "--log-level", "error", "--logger", "zap",
        ] + self.extra_args
        self.log = open(os.path.join(self.dir, "etcd.log"), "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("etcd exited: " + self._log_text())
            r = subprocess.run([ETCDCTL, "--endpoints", self.endpoint, "--command-timeout", "1s",
                                "endpoint", "health"], capture_output=True,
                               env={"PATH": os.environ.get("PATH", "")})
            if r.returncode == 0:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("etcd did not become healthy: " + self._log_text())

    def _log_text(self) -> str:
        try:
            with open(os.path.join(self.dir, "etcd.log"), "rb") as fh:
                return fh.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "EtcdServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
