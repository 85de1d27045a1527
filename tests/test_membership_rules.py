"""etcd 3.4's rules for membership changes (its --strict-reconfig-check, on by default): the same
etcdctl steps against a real etcd cluster and a petcd cluster give the same outputs (member ids,
cluster ids and ports masked).

The rules (etcd's IsReadyToAddVotingMember, IsReadyToRemoveVotingMember, IsReadyToPromoteMember
and mayAddMember / mayRemoveMember): a one-member cluster may always grow; otherwise the started
voters must stay a quorum; an add needs every voter connected; a voter that is down may be
removed; removing a running voter must leave an active quorum.

etcd counts a peer as connected once it has been so for 5 s, so a step that must succeed is
retried while it answers "unhealthy cluster" (as an operator would); petcd judges from what the
leader heard from each peer in the last election timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

from tests.servers import Server, _start, etcd_binary, free_port, petcd_command, petcd_member_argv
from tests.waiting import wait_until

SETTLE_S = 30.0


def _etcdctl(endpoints: list[str], *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [etcd_binary("etcdctl"), "--endpoints", ",".join(endpoints), *args],
        capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=timeout_s,
    )


class _Run:
    """One cluster (petcd, or real etcd with the same flags) driven by etcdctl; records each step's output."""

    def __init__(self, server: str, root: str) -> None:
        self.server, self.root = server, root
        self.peer: dict[str, str] = {}  # name -> peer URL
        self.client: dict[str, str] = {}  # name -> host:port
        self.procs: dict[str, Server] = {}
        self.members: list[str] = []  # names in the membership, in the order they joined
        self.record: list[tuple[str, str]] = []
        self.aliases: dict[str, str] = {}  # a name -> what the record calls it (the member left may be either)

    # -- processes
    def start(self, name: str, state: str) -> None:
        self.peer.setdefault(name, f"http://127.0.0.1:{free_port()}")
        port = int(self.client[name].rpartition(":")[2]) if name in self.client else free_port()
        self.client[name] = f"127.0.0.1:{port}"
        initial = ",".join(f"{n}={self.peer[n]}" for n in self.members)
        argv = petcd_member_argv(name, f"{self.root}/{name}", port, self.peer[name], initial, state)
        if self.server == "etcd":
            argv = [etcd_binary(), *argv[len(petcd_command()):]]
        self.procs[name] = _start(argv, self.client[name], f"{self.root}/{name}", ready=False)

    def new_peer(self, name: str) -> str:
        self.peer[name] = f"http://127.0.0.1:{free_port()}"
        return self.peer[name]

    def stop(self, name: str) -> None:
        self.procs[name].stop()

    def stop_all(self) -> None:
        for s in self.procs.values():
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in self.procs.values():
            try:
                s.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()

    # -- queries
    def healthy(self, *names: str) -> bool:
        out = _etcdctl([self.client[n] for n in names], "--command-timeout=2s", "endpoint", "health")
        return out.returncode == 0

    def member_list(self, via: str) -> list[dict]:
        out = _etcdctl([self.client[via]], "member", "list", "-w", "json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout).get("members", [])

    def member_id(self, via: str, name: str) -> str:
        found = [m["ID"] for m in self.member_list(via) if m.get("peerURLs") == [self.peer[name]]]
        assert found, f"{name} is not in the member list"
        return f"{found[0]:x}"

    def leader(self, *names: str) -> str:
        out = _etcdctl([self.client[n] for n in names], "endpoint", "status", "-w", "json")
        statuses = json.loads(out.stdout)
        leaders = {s["Status"]["leader"] for s in statuses} - {0}
        assert len(leaders) == 1, out.stdout
        lead = leaders.pop()
        return next(s["Endpoint"] for s in statuses if s["Status"]["header"]["member_id"] == lead)

    # -- recorded steps
    def step(self, what: str, via: str, *args: str, settle_on: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """Run etcdctl on member `via` and record its output; while it fails with one of
        `settle_on`, try again (the cluster is still settling) until SETTLE_S has passed."""
        def settled() -> subprocess.CompletedProcess[str] | None:
            out = _etcdctl([self.client[via]], *args)
            return out if out.returncode == 0 or not any(s in out.stderr for s in settle_on) else None

        out = wait_until(settled, SETTLE_S, f"{' '.join(args)} to stop answering {settle_on}", interval_s=0.3)
        self.record.append((what, self._mask(f"rc={out.returncode}\n{out.stdout}{out.stderr}")))
        return out

    def _mask(self, text: str) -> str:
        for name, url in self.peer.items():
            text = text.replace(url, f"<peer of {self.aliases.get(name, name)}>")
        for name, alias in self.aliases.items():
            text = re.sub(rf"\b{name}=", f"{alias}=", text)
        for name, ep in self.client.items():
            text = text.replace(ep, f"<client of {self.aliases.get(name, name)}>")
        text = re.sub(r'"ts":"[^"]*"', '"ts":"<ts>"', text)  # clientv3's retry log lines
        text = re.sub(r"endpoint://client-[0-9a-f-]+/", "endpoint://client-<uuid>/", text)
        text = re.sub(r"\b[0-9a-f]{8,16}\b", "<id>", text)
        text = re.sub(r" +<id>", " <id>", text)  # etcdctl pads ids to 16 columns: %16x
        # etcdctl lists the members of ETCD_INITIAL_CLUSTER in id order, and ids differ
        return re.sub(r'ETCD_INITIAL_CLUSTER="([^"]*)"', lambda m: 'ETCD_INITIAL_CLUSTER="' + ",".join(sorted(m[1].split(","))) + '"', text)


def _scenario(server: str, root: str) -> list[tuple[str, str]]:
    run = _Run(server, root)
    try:
        run.members = ["m1"]
        run.start("m1", "new")
        wait_until(lambda: run.healthy("m1"), 30, f"{server} m1 is healthy")

        # Issue 8 §6: a healthy one-member cluster takes a second voting member.
        run.peer["m2"] = f"http://127.0.0.1:{free_port()}"
        run.step("add a voter to a one-member cluster", "m1", "member", "add", "m2", f"--peer-urls={run.peer['m2']}")
        run.members.append("m2")
        run.start("m2", "existing")
        wait_until(lambda: run.healthy("m1", "m2"), 30, f"{server} m1 and m2 are healthy")

        # Remove down to one member (both running).
        run.step("remove a voter of a two-member cluster", "m1", "member", "remove", run.member_id("m1", "m2"),
                 settle_on=("unhealthy cluster",))
        run.members.remove("m2")
        wait_until(lambda: run.procs["m2"].proc.poll() is not None, 30, f"{server} removed m2 stops")

        # A learner in a one-member cluster, promoted once in sync.
        run.peer["l3"] = f"http://127.0.0.1:{free_port()}"
        run.step("add a learner to a one-member cluster", "m1", "member", "add", "l3", "--learner", f"--peer-urls={run.peer['l3']}")
        run.members.append("l3")
        run.start("l3", "existing")
        wait_until(lambda: any(m.get("name") == "l3" for m in run.member_list("m1")), 30, f"{server} l3 has started")
        run.step("promote the learner of a one-member cluster", "m1", "member", "promote", run.member_id("m1", "l3"),
                 settle_on=("in sync with leader",))
        wait_until(lambda: run.healthy("m1", "l3"), 30, f"{server} m1 and l3 are healthy")

        # Two voters, one down: no add (etcd: some voter is not connected).
        run.stop("l3")
        wait_until(lambda: not run.healthy("m1"), 30, f"{server} m1 alone has no leader")
        run.step("add a voter to a two-member cluster with one member down", "m1", "member", "add", "m5",
                 f"--peer-urls=http://127.0.0.1:{free_port()}")
        run.step("add a learner to a two-member cluster with one member down", "m1", "member", "add", "m5",
                 "--learner", f"--peer-urls=http://127.0.0.1:{free_port()}")

        # Both back: remove the leader; the other one leads on.
        run.start("l3", "existing")
        wait_until(lambda: run.healthy("m1", "l3"), 30, f"{server} m1 and l3 are healthy again")
        leader_ep = run.leader("m1", "l3")
        leader = next(n for n in ("m1", "l3") if run.client[n] == leader_ep)
        other = "l3" if leader == "m1" else "m1"
        run.step("remove the leader", other, "member", "remove", run.member_id(other, leader), settle_on=("unhealthy cluster",))
        run.members.remove(leader)
        wait_until(lambda: run.procs[leader].proc.poll() is not None, 30, f"{server} the removed leader stops")
        wait_until(lambda: run.healthy(other), 30, f"{server} the member left is healthy")
        names = sorted(m.get("name", "") for m in run.member_list(other))
        run.record.append(("the member left is the one that did not lead", json.dumps(names == [other])))
        run.aliases[other] = "survivor"

        # One member again: it grows to two voters, one never started; a third voter would leave
        # the started ones short of a quorum.
        run.step("add a voter that never starts to a one-member cluster", other, "member", "add", "m6",
                 f"--peer-urls={run.new_peer('m6')}")
        run.step("add a voter when the started voters would not be a quorum", other, "member", "add", "m7",
                 f"--peer-urls={run.new_peer('m7')}")
        return run.record
    finally:
        run.stop_all()


def test_a_one_member_cluster_can_grow(tmp_path):
    """Issue 8 §6 and its neighbours: add to a one-member cluster, remove down to one, learner
    promotion in a one-member cluster, add with a member down, remove the leader — as etcd does."""
    expected = _scenario("etcd", str(tmp_path / "etcd"))
    got = _scenario("petcd", str(tmp_path / "petcd"))
    for (what, want), (_, have) in zip(expected, got):
        assert have == want, f"{what}:\n--- etcd\n{want}\n--- petcd\n{have}"
    assert [w for w, _ in got] == [w for w, _ in expected]
