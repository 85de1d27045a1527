"""petcd's flags, ETCD_* variables and YAML config file, as etcd reads them."""

from __future__ import annotations

import pytest

from petcd.rpc.config import ConfigError, parse
from petcd.rpc.member_ids import cluster_id, member_id
from tests.servers import free_port, start_petcd


def test_defaults_are_etcds():
    cfg = parse([], {})
    assert (cfg.name, cfg.data_dir, cfg.listen_client_urls) == ("default", "default.etcd", "http://localhost:2379")
    assert cfg.initial_cluster == "default=http://localhost:2380"
    assert (cfg.max_txn_ops, cfg.max_request_bytes, cfg.heartbeat_interval, cfg.election_timeout) == (128, 1572864, 100, 1000)


def test_go_flag_spellings_and_env():
    cfg = parse(["-name", "n1", "--data-dir=/tmp/x", "--max-txn-ops", "7", "--initial-cluster", "n1=http://localhost:2380"], {"ETCD_MAX_REQUEST_BYTES": "99"})
    assert (cfg.name, cfg.data_dir, cfg.max_txn_ops, cfg.max_request_bytes) == ("n1", "/tmp/x", 7, 99)
    assert parse(["--max-txn-ops", "3"], {"ETCD_MAX_TXN_OPS": "5"}).max_txn_ops == 3, "a flag beats the environment"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nope"], "flag provided but not defined: -nope"),
        (["--name"], "flag needs an argument: -name"),
        (["--max-txn-ops", "abc"], 'invalid value "abc" for flag -max-txn-ops: parse error'),
        (["extra"], "'extra' is not a valid flag. See 'petcd --help'."),
        (["--name", "x", "--initial-cluster", "y=http://localhost:2380"], "couldn't find local name 'x' in the initial cluster configuration"),
        (["--initial-cluster-state", "maybe"], "invalid value 'maybe' for flag -initial-cluster-state: want new or existing"),
    ],
)
def test_bad_flags_say_what_is_wrong(argv, message):
    with pytest.raises(ConfigError) as err:
        parse(argv, {})
    assert str(err.value) == message


def test_ids_are_computed_as_etcd_computes_them():
    # etcd's well-known ids for its default single member
    mid = member_id(["http://localhost:2380"], "etcd-cluster")
    assert f"{mid:x}" == "8e9e05c52164694d"
    assert f"{cluster_id([mid]):x}" == "cdf818194e3a8c32"


def test_config_file_replaces_flags_and_serves(tmp_path):
    port, peer = free_port(), free_port()
    conf = tmp_path / "petcd.yaml"
    conf.write_text(
        f"name: alpha\ndata-dir: {tmp_path / 'd'}\nlisten-client-urls: http://127.0.0.1:{port}\n"
        f"listen-peer-urls: http://127.0.0.1:{peer}\ninitial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-cluster: alpha=http://127.0.0.1:{peer}\nmax-txn-ops: 4\n"
    )
    cfg = parse(["--config-file", str(conf), "--max-txn-ops", "100"], {})
    assert (cfg.name, cfg.max_txn_ops) == ("alpha", 4)
    server = start_petcd(str(tmp_path / "ignored"), "--config-file", str(conf), port=port)
    try:
        assert server.stub().Range(__import__("petcd.rpc.pb.rpc_pb2", fromlist=["x"]).RangeRequest(key=b"a")).header.revision == 1
        assert (tmp_path / "d" / "member").is_dir()
    finally:
        assert server.stop() == 0


def test_bad_config_file(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("max-txn-ops: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        parse(["--config-file", str(conf)], {})
    with pytest.raises(ConfigError, match="cannot load config file"):
        parse(["--config-file", str(tmp_path / "missing.yaml")], {})
