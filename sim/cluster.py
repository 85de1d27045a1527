"""A simulated cluster: the production actors of N members plus clients, in one `SimRuntime`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from petcd.actors.apply_actor import ApplyActor, ApplyConfig
from petcd.actors.lease_actor import LeaseActor, LeaseConfig
from petcd.actors.raft_actor import RaftActor, RaftConfig
from petcd.actors.watch_actor import WatchActor, WatchConfig
from petcd.sim.client import KvClient, Op
from petcd.sim.runtime import Network, SimRuntime


SIM_CLUSTER_ID = 0x5E7CD
# Every simulated member runs the periodic corruption check (--experimental-corrupt-check-time) this often.
CORRUPT_CHECK_MS = 2000
SIM_SNAPSHOT_CHUNK_BYTES = 16 << 10
# A store compaction drops this many records per entry applied, so that a simulated one (of a few
# hundred revisions) takes many steps, across faults; auto-compaction every AUTO_COMPACT_MS.
SIM_COMPACT_STEP_RECORDS = 16
AUTO_COMPACT_MS = 5000


@dataclass(slots=True)
class SimCluster:
    runtime: SimRuntime
    members: list[str]
    data_root: str
    clients: list[KvClient] = field(default_factory=list)
    history: list[Op] = field(default_factory=list)
    # Every revision's events as an apply actor published them (to its watch actor), the first seen:
    # the checkers' history of what was committed, which compaction takes from the stores.
    published: dict[int, list[Any]] = field(default_factory=dict)

    def tap_published(self, sender: str, to: str, msgs: list[Any]) -> None:
        if sender.endswith("/apply") and to.endswith("/watch"):
            for msg in msgs:
                # Live events, and history a watcher catches up from: a revision whose events no
                # member published live (its publisher lost power mid-turn, the others caught up by
                # snapshot) reaches watchers that way only (found by the campaign, seed 4196).
                if msg.get("t") in ("events", "history"):
                    for revision, events in msg.get("revs", ()):
                        self.published.setdefault(revision, events)

    def add_clients(self, count: int, ops_per_client: int, keys: list[bytes]) -> None:
        for i in range(len(self.clients), len(self.clients) + count):
            member = self.members[i % len(self.members)]
            client = KvClient(member, keys, ops_per_client, self.history)
            self.clients.append(client)
            self.runtime.add(f"c{i}/client", lambda c=client: c)

    def clients_done(self) -> bool:
        return all(c.done for c in self.clients)


def build(
    seed: int, member_count: int, data_root: str, network: Network | None = None, *, trace: bool = False, snapshot_count: int = 100_000
) -> SimCluster:
    """Members m1..mN, each a Raft actor and an apply actor with their stores under `data_root`.

    Both stores of a member, the Raft log and the apply actor's MVCC store, come
    from its simulated disk (sim/disk.py), which syncs nothing but keeps what a
    power loss would leave. Both ask for synced commits, as in production.
    """
    rt = SimRuntime(seed, network, trace=trace)
    members = [f"m{i + 1}" for i in range(member_count)]
    initial = {m: {"name": m, "peer_urls": [f"http://{m}:2380"], "client_urls": []} for m in members}
    for m in members:
        data_dir = os.path.join(data_root, m)
        os.makedirs(data_dir, exist_ok=True)
        raft_cfg = RaftConfig(member_id=m, data_dir=data_dir, cluster_id=SIM_CLUSTER_ID, initial_members=initial, snapshot_count=snapshot_count)
        # Small snapshot chunks: a simulated store is small, and a snapshot should still take several
        # windows of acknowledged chunks (actors/apply_actor.py SNAPSHOT_WINDOW_CHUNKS).
        apply_cfg = ApplyConfig(member_id=m, data_dir=data_dir, snapshot_chunk_bytes=SIM_SNAPSHOT_CHUNK_BYTES,
                                compact_step_records=SIM_COMPACT_STEP_RECORDS)
        rt.add(f"{m}/watch", lambda m=m: WatchActor(WatchConfig(member_id=m)))
        # The corruption check runs in every simulated cluster: the `corrupt` fault needs it, and
        # every other fault shows it raises no false alarm.
        rt.add(f"{m}/lease", lambda m=m: LeaseActor(LeaseConfig(
            member_id=m, corrupt_check_interval_ms=CORRUPT_CHECK_MS, auto_compaction_mode="periodic", auto_compaction_retention=AUTO_COMPACT_MS)))
        rt.add(f"{m}/apply", lambda c=apply_cfg: ApplyActor(c))
        rt.add(f"{m}/raft", lambda c=raft_cfg: RaftActor(c))
    cluster = SimCluster(rt, members, data_root)
    rt.taps.append(cluster.tap_published)
    return cluster
