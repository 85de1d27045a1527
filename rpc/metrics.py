"""/metrics: a member's Prometheus metrics, named as etcd 3.4 names them where the meaning is the same.

Every process of the member contributes. The gateway (this module, in the gateway process) asks
each actor process for its counters with a "runtime_metrics" message, which the process runtime
answers itself (actors/proc_runtime.py RuntimeStats: batches, messages, batch sizes, backlog, plus
the actor's own plain `metrics()` numbers); actors never call prometheus_client nor do IO. The
gateway adds what it sees itself: the store (read-only: applied index, size, keys), the Raft
actor's status (leader, commit index), the proposals it waits on, and every gRPC call it handled
(a server interceptor). Everything is gathered at scrape time and rendered by prometheus_client.

etcd metrics exported, with etcd's types:
  etcd_server_has_leader, etcd_server_is_leader, etcd_server_is_learner (gauges)
  etcd_server_leader_changes_seen_total (counter: new leaders the gateway's status poll saw,
      every 0.5 s, so two changes within one poll count once)
  etcd_server_proposals_committed_total, etcd_server_proposals_applied_total (gauges, as etcd's:
      the commit index and the applied index)
  etcd_server_proposals_pending (gauge: proposals this member's gateway waits on)
  etcd_server_proposals_failed_total (counter: proposals that got no commit: timeout, leader change)
  etcd_mvcc_db_total_size_in_bytes, etcd_mvcc_db_total_size_in_use_in_bytes (gauges)
  etcd_debugging_mvcc_keys_total, etcd_debugging_mvcc_watcher_total,
  etcd_debugging_mvcc_current_revision (gauges)
  grpc_server_handled_total (counter, by grpc_type, grpc_service, grpc_method, grpc_code; the gRPC
      calls only: etcd's JSON gateway dials its own gRPC server, petcd's calls the servicers directly)
  etcd_disk_wal_fsync_duration_seconds, etcd_disk_backend_commit_duration_seconds (histograms, etcd's
      buckets: the Raft log's synced appends and the MVCC store's synced LMDB commits, timed by the process runtime's
      disk, store/disk.py LocalDisk; both include the write as well as its fsync)
  etcd_network_peer_round_trip_time_seconds (histogram by To, etcd's buckets: the Raft actor probes
      every peer's Raft actor every 4 s as etcd's prober does, over the Raft transport, ZeroMQ)
petcd's own: petcd_actor_batches_total, petcd_actor_messages_total, petcd_actor_backlogged_batches_total,
petcd_actor_batch_size (histogram), petcd_actor_queue_depth{actor, queue}, petcd_gateway_requests_in_flight.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter as Tally
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from petcd.actors.proc_runtime import RUNTIME_METRICS
from petcd.rpc.link import LinkError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ACTORS = ("raft", "apply", "watch", "lease")
_SCRAPE_TIMEOUT_S = 2.0
# Queues the actors report (their metrics() keys) -> the queue's name in petcd_actor_queue_depth.
_QUEUES = {"waiting_reads": "waiting_reads", "queued_out": "outbox", "renewals_waiting": "lease_renewals",
           "revocations_pending": "lease_revocations"}


class GrpcCounter(grpc.aio.ServerInterceptor):
    """grpc_server_handled_total: every finished gRPC call by type, service, method and status code."""

    def __init__(self) -> None:
        self.handled: Tally[tuple[str, str, str, str]] = Tally()

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, ("unary", service, method)),
                                                       handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self._stream(handler.unary_stream, ("server_stream", service, method)),
                                                        handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(self._unary(handler.stream_unary, ("client_stream", service, method)),
                                                        handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(self._stream(handler.stream_stream, ("bidi_stream", service, method)),
                                                     handler.request_deserializer, handler.response_serializer)

    def _count(self, labels: tuple[str, str, str], context: Any, failed: bool) -> None:
        code = None
        try:
            code = context.code()
        except Exception:  # noqa: BLE001 - older grpc.aio contexts have no code()
            pass
        name = code.name if isinstance(code, grpc.StatusCode) else ("UNKNOWN" if failed else "OK")
        self.handled[(*labels, name)] += 1

    def _unary(self, behavior: Any, labels: tuple[str, str, str]) -> Any:
        async def call(request: Any, context: Any) -> Any:
            try:
                response = await behavior(request, context)
            except BaseException:
                self._count(labels, context, True)
                raise
            self._count(labels, context, False)
            return response
        return call

    def _stream(self, behavior: Any, labels: tuple[str, str, str]) -> Any:
        if inspect.isasyncgenfunction(behavior) or inspect.isasyncgenfunction(getattr(behavior, "__func__", None)):
            async def gen(request: Any, context: Any) -> Any:
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException:
                    self._count(labels, context, True)
                    raise
                self._count(labels, context, False)
            return gen
        return self._unary(behavior, labels)


class MemberMetrics:
    """Gathers every process's numbers and renders them (see the module docstring)."""

    def __init__(self, state: Any, grpc_counter: GrpcCounter) -> None:
        self._s = state
        self._grpc = grpc_counter
        self._families: list[Any] = []
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def collect(self) -> Any:  # prometheus_client's collector protocol
        return iter(self._families)

    async def render(self) -> bytes:
        self._families = await self._gather()
        return generate_latest(self._registry)

    async def _ask(self, role: str) -> dict[str, Any] | None:
        address = self._s.raft_address.replace("/raft", f"/{role}")
        try:
            return (await self._s.link.call(address, {"t": RUNTIME_METRICS}, _SCRAPE_TIMEOUT_S))["resp"]
        except LinkError:
            return None

    async def _gather(self) -> list[Any]:
        s = self._s
        try:
            status = (await s.link.call(s.raft_address, {"t": "status"}, _SCRAPE_TIMEOUT_S))["resp"]
        except LinkError:
            status = {"leader": "", "is_learner": s.is_learner, "commit": 0}
        runtimes = dict(zip(ACTORS, await asyncio.gather(*(self._ask(role) for role in ACTORS))))
        store = s.store
        db_size, db_in_use = store.db_size_bytes()
        keys = store.range({"key": b"\x00", "range_end": b"\x00", "count_only": True}).get("count", 0)
        watch = (runtimes.get("watch") or {}).get("actor", {})
        me = f"{s.member_id:x}"

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        families: list[Any] = [
            gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", int(bool(status["leader"]))),
            gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", int(status["leader"] == me)),
            gauge("etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.", int(bool(status["is_learner"]))),
            counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen.", s.leader_changes),
            gauge("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.", status.get("commit", 0)),
            gauge("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.", store.applied_index()),
            gauge("etcd_server_proposals_pending", "The current number of pending proposals to commit.", s.proposals_pending),
            counter("etcd_server_proposals_failed_total", "The total number of failed proposals seen.", s.proposals_failed),
            gauge("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", db_size),
            gauge("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.", db_in_use),
            gauge("etcd_debugging_mvcc_keys_total", "Total number of keys.", keys),
            gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers.", watch.get("watchers", 0)),
            gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.", store.current_revision()),
            gauge("petcd_gateway_requests_in_flight", "Requests this member's gateway waits on its actors for.", len(getattr(s.link, "_pending", ()))),
        ]
        handled = CounterMetricFamily("grpc_server_handled_total", "Total number of RPCs completed on the server, regardless of success or failure.",
                                      labels=["grpc_type", "grpc_service", "grpc_method", "grpc_code"])
        for labels, n in sorted(self._grpc.handled.items()):
            handled.add_metric(list(labels), n)
        families.append(handled)
        batches = CounterMetricFamily("petcd_actor_batches_total", "Batches of messages the process runtime handed to the actor.", labels=["actor"])
        messages = CounterMetricFamily("petcd_actor_messages_total", "Messages the process runtime handed to the actor.", labels=["actor"])
        backlog = CounterMetricFamily("petcd_actor_backlogged_batches_total",
                                      "Batches that were full: more messages were waiting than one batch holds.", labels=["actor"])
        sizes = HistogramMetricFamily("petcd_actor_batch_size", "Messages per batch handed to the actor.", labels=["actor"])
        depth = GaugeMetricFamily("petcd_actor_queue_depth", "Requests waiting in an actor's own queue.", labels=["actor", "queue"])
        for role, report in runtimes.items():
            if report is None:
                continue
            batches.add_metric([role], report["batches"])
            messages.add_metric([role], report["messages"])
            backlog.add_metric([role], report["full_batches"])
            cumulative, buckets = 0, []
            for bound, n in report["batch_buckets"]:
                cumulative += n
                buckets.append((str(float(bound)), cumulative))
            buckets.append(("+Inf", cumulative))
            sizes.add_metric([role], buckets, sum_value=report["messages"])
            for key, queue in _QUEUES.items():
                if key in report["actor"]:
                    depth.add_metric([role, queue], report["actor"][key])
        families += [batches, messages, backlog, sizes, depth]
        families.append(_commit_histogram("etcd_disk_wal_fsync_duration_seconds",
                                          "The latency distributions of fsync called by WAL.", runtimes.get("raft"), "raft_log"))
        families.append(_commit_histogram("etcd_disk_backend_commit_duration_seconds",
                                          "The latency distributions of commit called by backend.", runtimes.get("apply"), "mvcc"))
        rtt = HistogramMetricFamily("etcd_network_peer_round_trip_time_seconds", "Round-Trip-Time histogram between peers",
                                    labels=["To"])
        peers = sorted(((runtimes.get("raft") or {}).get("actor") or {}).get("peer_rtt", {}).items())
        for peer, report in peers:
            _add_histogram(rtt, [peer], report)
        if peers:  # as etcd's: a member without peers has no such series, and shows no family
            families.append(rtt)
        return families


def _commit_histogram(name: str, doc: str, report: dict[str, Any] | None, store: str) -> HistogramMetricFamily:
    """One store's synced commit times (store/disk.py, a store/histogram.py report), as a Prometheus histogram."""
    family = HistogramMetricFamily(name, doc)
    times = ((report or {}).get("disk") or {}).get(store)
    if times is not None:
        _add_histogram(family, [], times)
    return family


def _add_histogram(family: HistogramMetricFamily, labels: list[str], report: dict[str, Any]) -> None:
    """A store/histogram.py report (bounds with their counts, count, sum) as one labelled histogram."""
    cumulative, buckets = 0, []
    for bound, n in report["buckets"]:
        cumulative += n
        buckets.append((repr(float(bound)), cumulative))
    buckets.append(("+Inf", report["count"]))
    family.add_metric(labels, buckets, sum_value=report["sum"])
