"""Linux network namespaces for `petcd chaos --net netns`: every member and every client on its own network.

One run makes, all named `pchaos-<pid>.<start>.<n>-<node>` (the owner's pid, its start time
in clock ticks and a counter, so parallel runs and leftovers never clash):

- a hub namespace holding a bridge `br0`;
- one namespace per node (member `m1`, ..., client `c0`, ...), each joined to the bridge by a
  veth pair (`eth0` inside, the node's name on the hub), with an address 10.A.B.i/24 of a
  subnet the run picks and lo up;
- one veth pair from the root namespace (`pch<pid hex>n<n>`, address 10.A.B.254) to the bridge,
  through which `petcd chaos` itself reaches the members (readiness, leader lookups, the final
  phase). It is never cut.

A link between two nodes is cut with a blackhole route to the other's address on both sides
(`ip route add blackhole B/32` in A's namespace and the reverse): the kernel drops the packets
and refuses new connections. `heal` removes the routes. Processes are put in a namespace with
`ip netns exec` (members) or setns(2) (client processes, before they make any socket).

`teardown` kills whatever still runs in the run's namespaces, deletes the root veth and every
namespace; `cleanup_stale` deletes the namespaces of earlier runs whose owner process is gone.
No traffic leaves the namespaces the run made (the bridge has no uplink, nothing is routed).
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PREFIX = "pchaos-"
NETNS_DIR = "/run/netns"
HUB = "hub"
CLONE_NEWNET = 0x40000000
_NAME = re.compile(r"^pchaos-(\d+)\.(\d+)\.(\d+)-([A-Za-z0-9]+)$")
_counter = itertools.count(1)


class NetnsError(Exception):
    """Namespaces cannot be made or changed here (no privileges, no `ip`, a kernel without veth...)."""


def unavailable() -> str | None:
    """Why `--net netns` cannot run on this machine, or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are a Linux feature"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run as root or use --net hook"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not on PATH; install iproute2 or use --net hook"
    if not os.path.exists("/proc/self/ns/net"):
        return "this kernel has no network namespaces (/proc/self/ns/net is missing); use --net hook"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and proc.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), which tells a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def list_namespaces() -> list[str]:
    proc = ip("netns", "list", check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _owner_alive(name: str) -> bool:
    m = _NAME.match(name)
    if m is None:
        return True  # not ours: never touched
    return _start_ticks(int(m[1])) == int(m[2])


def cleanup_stale() -> list[str]:
    """Delete every `pchaos-` namespace whose owner process is gone (a run killed with -9); their names.

    What still runs inside one (members of that dead run) is killed first, so the namespace goes away.
    """
    removed = []
    for name in list_namespaces():
        if name.startswith(PREFIX) and _NAME.match(name) and not _owner_alive(name):
            _kill_inside(name)
            if ip("netns", "del", name, check=False).returncode == 0:
                removed.append(name)
    return removed


def _kill_inside(ns: str) -> None:
    proc = ip("netns", "pids", ns, check=False)
    for word in proc.stdout.split():
        try:
            os.kill(int(word), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def enter(ns_path: str) -> None:
    """Move the calling thread (and the threads and processes it makes later) into a namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(ns_path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns_path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in ip("-4", "-o", "addr", "show", check=False).stdout.splitlines():
        m = re.search(r"inet (\S+)", line)
        if m:
            nets.append(ipaddress.ip_interface(m[1]).network)
    for line in ip("-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word and word[0].isdigit():
            try:
                nets.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
    return nets


class NetnsNet:
    """The namespaces, links and cuts of one run."""

    def __init__(self, nodes: list[str]) -> None:
        pid = os.getpid()
        self.tag = f"{pid}.{_start_ticks(pid) or 0}.{next(_counter)}"
        self.root_link = f"pch{pid:x}n{self.tag.rsplit('.', 1)[1]}"[:15]
        self.nodes = list(nodes)
        self.subnet: ipaddress.IPv4Network | None = None
        self.addresses: dict[str, str] = {}
        self.created: list[str] = []  # namespaces, in creation order
        self.cuts: set[tuple[str, str]] = set()  # (node, other): a blackhole to other's address in node's namespace
        self.netem: str | None = None  # why tc netem cannot be used (None: it can), after setup
        self._root_link_made = False

    def ns(self, node: str) -> str:
        return f"{PREFIX}{self.tag}-{node}"

    def ns_path(self, node: str) -> str:
        return os.path.join(NETNS_DIR, self.ns(node))

    def exec_prefix(self, node: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(node)]

    def address(self, node: str) -> str:
        return self.addresses[node]

    @property
    def control_address(self) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + 254)

    # ------------------------------------------------------------------
    def setup(self) -> None:
        """Make every namespace and link; on any failure, undo what was made and raise NetnsError."""
        why = unavailable()
        if why:
            raise NetnsError(why)
        if len(self.nodes) > 250:
            raise NetnsError("at most 250 members and clients with --net netns")
        try:
            # One run at a time picks a subnet and claims it with its root link.
            with open(os.path.join(tempfile.gettempdir(), "petcd-chaos-netns.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self.subnet = self._pick_subnet()
                hub = self.ns(HUB)
                self._add_ns(hub)
                ip("-n", hub, "link", "add", "br0", "type", "bridge")
                ip("-n", hub, "link", "set", "br0", "up")
                ip("-n", hub, "link", "add", "ctl", "type", "veth", "peer", "name", self.root_link, "netns", "1")
                self._root_link_made = True
                ip("-n", hub, "link", "set", "ctl", "master", "br0", "up")
                ip("addr", "add", f"{self.control_address}/24", "dev", self.root_link)
                ip("link", "set", self.root_link, "up")
            for i, node in enumerate(self.nodes):
                ns = self.ns(node)
                self._add_ns(ns)
                addr = str(self.subnet.network_address + 1 + i)
                ip("-n", hub, "link", "add", node, "type", "veth", "peer", "name", "eth0", "netns", ns)
                ip("-n", hub, "link", "set", node, "master", "br0", "up")
                ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
                self.addresses[node] = addr
            self.netem = self._probe_netem()
        except BaseException:
            self.teardown()
            raise

    def _add_ns(self, ns: str) -> None:
        ip("netns", "add", ns)
        self.created.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")

    def _pick_subnet(self) -> ipaddress.IPv4Network:
        used = _used_networks()
        start = (os.getpid() * 7 + int(self.tag.rsplit(".", 1)[1])) % (50 * 256)
        for k in range(50 * 256):
            n = (start + k) % (50 * 256)
            net = ipaddress.ip_network(f"10.{200 + n // 256}.{n % 256}.0/24")
            if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
                return net
        raise NetnsError("no free 10.200.0.0/16-10.249.0.0/16 subnet for the run's namespaces")

    def _probe_netem(self) -> str | None:
        if shutil.which("tc") is None:
            return "no `tc` command"
        dev = self.nodes[0] if self.nodes else "ctl"
        proc = subprocess.run(["tc", "-n", self.ns(HUB), "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms"],
                              capture_output=True, text=True, timeout=20)
        if proc.returncode != 0:
            return (proc.stderr or proc.stdout).strip() or f"tc exited with {proc.returncode}"
        subprocess.run(["tc", "-n", self.ns(HUB), "qdisc", "del", "dev", dev, "root"], capture_output=True, timeout=20)
        return None

    # ------------------------------------------------------------------
    def cut(self, pairs: list[tuple[str, str]]) -> None:
        """Cut each link a<->b, both ways (a blackhole route on each side): one `ip -batch` per namespace touched."""
        todo: dict[str, list[str]] = {}
        for a, b in pairs:
            for x, y in ((a, b), (b, a)):
                if (x, y) not in self.cuts:
                    todo.setdefault(x, []).append(y)
                    self.cuts.add((x, y))
        self._routes("add", todo, check=True)

    def heal(self) -> None:
        todo: dict[str, list[str]] = {}
        for x, y in sorted(self.cuts):
            todo.setdefault(x, []).append(y)
        self.cuts.clear()
        self._routes("del", todo, check=False)

    def _routes(self, verb: str, todo: dict[str, list[str]], check: bool) -> None:
        for x, ys in todo.items():
            script = "".join(f"route {verb} blackhole {self.addresses[y]}/32\n" for y in ys)
            proc = subprocess.run(["ip", "-n", self.ns(x), "-force", "-batch", "-"], input=script,
                                  capture_output=True, text=True, timeout=20)
            if check and proc.returncode != 0:
                raise NetnsError(f"cutting {x} off from {', '.join(ys)} failed: {(proc.stderr or proc.stdout).strip()}")

    def teardown(self) -> list[str]:
        """Kill what runs in the run's namespaces, delete them and the root link; problems, as text."""
        problems = []
        for ns in self.created:
            _kill_inside(ns)
        if self._root_link_made:
            proc = ip("link", "del", self.root_link, check=False)
            if proc.returncode != 0 and "Cannot find device" not in proc.stderr:
                problems.append(proc.stderr.strip())
            self._root_link_made = False
        for ns in reversed(self.created):
            for attempt in range(3):
                proc = ip("netns", "del", ns, check=False)
                if proc.returncode == 0 or not os.path.exists(os.path.join(NETNS_DIR, ns)):
                    break
                time.sleep(0.1)
            else:
                problems.append(f"{ns}: {proc.stderr.strip()}")
        self.created = []
        self.cuts.clear()
        return problems
