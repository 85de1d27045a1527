"""/metrics (rpc/metrics.py): every etcd-named metric petcd exports exists in real etcd 3.4's output
with the same type, values move with the work done, and --listen-metrics-urls serves /metrics and
/health on a port of its own."""

from __future__ import annotations

import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from petcd.rpc.pb import rpc_pb2 as pb
from petcd.rpc.pb import rpc_pb2_grpc as pb_grpc
from petcd.sim.ports import free_port
from tests.servers import start_etcd, start_petcd
from tests.waiting import wait_until

ETCD_NAMED = (
    "etcd_server_has_leader", "etcd_server_leader_changes_seen_total", "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total", "etcd_server_proposals_pending", "etcd_server_proposals_failed_total",
    "etcd_mvcc_db_total_size_in_bytes", "etcd_debugging_mvcc_keys_total", "etcd_debugging_mvcc_watcher_total",
    "grpc_server_handled_total", "etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds",
)


def scrape(address: str) -> dict[str, tuple[str, dict[tuple, float]]]:
    """name -> (type, {labels: value}) of a Prometheus endpoint."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" and not family.name.endswith("_total") else family.name
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        out[name] = (family.type, samples)
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    _, samples = metrics[name]
    return sum(v for (sample, ls), v in samples.items() if sample == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def observed(metrics: dict, histogram: str) -> float:
    """A histogram's observation count."""
    _, samples = metrics[histogram]
    return sum(v for (sample, _), v in samples.items() if sample == histogram + "_count")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    metrics_port = free_port()
    petcd = start_petcd(str(root / "petcd"), "--listen-metrics-urls", f"http://127.0.0.1:{metrics_port}")
    etcd = start_etcd(str(root / "etcd"))
    try:
        for s in (petcd, etcd):
            with grpc.insecure_channel(s.endpoint) as ch:
                pb_grpc.KVStub(ch).Put(pb.PutRequest(key=b"k", value=b"v"), timeout=10)
        yield petcd, etcd, f"127.0.0.1:{metrics_port}"
    finally:
        petcd.stop()
        etcd.stop()


def test_etcd_named_metrics_exist_in_etcd_with_the_same_type(servers):
    petcd, etcd, _ = servers
    ours, theirs = scrape(petcd.endpoint), scrape(etcd.endpoint)
    for name in ETCD_NAMED:
        assert name in ours, f"petcd does not export {name}"
    named = [n for n in ours if n.startswith(("etcd_", "grpc_"))]
    for name in named:
        assert name in theirs, f"{name}: petcd exports it, etcd 3.4 does not"
        assert ours[name][0] == theirs[name][0], f"{name}: petcd's type {ours[name][0]}, etcd's {theirs[name][0]}"
    assert value(ours, "etcd_server_has_leader") == 1
    assert value(ours, "etcd_server_leader_changes_seen_total") >= 1
    # every actor process reports through the gateway
    assert {dict(ls)["actor"] for (_, ls) in ours["petcd_actor_batches_total"][1]} == {"raft", "apply", "watch", "lease"}


def test_values_move(servers):
    petcd, _, _ = servers
    before = scrape(petcd.endpoint)
    with grpc.insecure_channel(petcd.endpoint) as ch:
        pb_grpc.KVStub(ch).Put(pb.PutRequest(key=b"moved", value=b"v"), timeout=10)
        wait_until(lambda: value(scrape(petcd.endpoint), "etcd_server_proposals_applied_total")
                   > value(before, "etcd_server_proposals_applied_total"), 10, "proposals_applied moves on a put")
        after = scrape(petcd.endpoint)
        assert value(after, "etcd_server_proposals_committed_total") > value(before, "etcd_server_proposals_committed_total")
        assert value(after, "etcd_debugging_mvcc_keys_total") == value(before, "etcd_debugging_mvcc_keys_total") + 1
        assert value(after, "grpc_server_handled_total", grpc_method="Put", grpc_code="OK") > \
            value(before, "grpc_server_handled_total", grpc_method="Put", grpc_code="OK")
        # the put was synced into the Raft log and committed to the MVCC store, each timed
        for histogram in ("etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds"):
            assert observed(after, histogram) > observed(before, histogram), histogram
        watches = pb_grpc.WatchStub(ch).Watch(iter([pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"moved"))]))
        created = next(watches)
        assert created.created
        wait_until(lambda: value(scrape(petcd.endpoint), "etcd_debugging_mvcc_watcher_total")
                   == value(before, "etcd_debugging_mvcc_watcher_total") + 1, 10, "watcher_total counts the watch")
        watches.cancel()
        wait_until(lambda: value(scrape(petcd.endpoint), "etcd_debugging_mvcc_watcher_total")
                   == value(before, "etcd_debugging_mvcc_watcher_total"), 10, "watcher_total drops when the stream ends")


def test_listen_metrics_urls_serves_metrics_and_health_only(servers):
    _, _, metrics_address = servers
    assert "etcd_server_has_leader" in scrape(metrics_address)
    with urllib.request.urlopen(f"http://{metrics_address}/health", timeout=10) as r:
        assert r.read() == b'{"health":"true"}'
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(f"http://{metrics_address}/v3/kv/range", data=b"{}"), timeout=10)
    assert err.value.code == 404
