"""petcd's flags, ETCD_* variables and YAML config file, as etcd reads them."""

from __future__ import annotations

import pytest

from petcd.rpc.config import ConfigError, parse
from petcd.rpc.member_ids import cluster_id, member_id
from tests.servers import free_port, start_petcd
from tests.waiting import wait_until


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
        (["--experimental-corrupt-check-time", "soon"], 'invalid value "soon" for flag -experimental-corrupt-check-time: parse error'),
        (["--logger", "capnslog"], "--logger capnslog is not supported by petcd: it logs JSON lines, as etcd's zap logger does (--logger zap)"),
        (["--logger", "syslog"], 'unknown logger option "syslog"'),
    ],
)
def test_bad_flags_say_what_is_wrong(argv, message):
    with pytest.raises(ConfigError) as err:
        parse(argv, {})
    assert str(err.value) == message


def test_corruption_check_flags():
    cfg = parse([], {})
    assert (cfg.experimental_initial_corrupt_check, cfg.corrupt_check_time_ms) == (False, 0)
    cfg = parse(["--experimental-initial-corrupt-check", "--experimental-corrupt-check-time", "1m30s"], {})
    assert (cfg.experimental_initial_corrupt_check, cfg.corrupt_check_time_ms) == (True, 90_000)
    assert parse([], {"ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME": "0"}).corrupt_check_time_ms == 0


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


# --- client TLS and auth flags --------------------------------------------------------------

TLS_URL = ["--listen-client-urls", "https://127.0.0.1:2379"]


def test_tls_and_auth_flags_defaults_env_and_bools():
    cfg = parse([], {})
    assert (cfg.cert_file, cfg.key_file, cfg.trusted_ca_file, cfg.client_cert_auth, cfg.auto_tls) == ("", "", "", False, False)
    assert (cfg.auth_token, cfg.auth_token_ttl, cfg.bcrypt_cost) == ("simple", 300, 10)
    cfg = parse([*TLS_URL, "--cert-file", "s.pem", "--key-file=s-key.pem", "--trusted-ca-file", "ca.pem", "--client-cert-auth",
                 "--auth-token-ttl", "60", "--bcrypt-cost", "4"], {})
    assert (cfg.cert_file, cfg.key_file, cfg.trusted_ca_file, cfg.client_cert_auth) == ("s.pem", "s-key.pem", "ca.pem", True)
    assert (cfg.auth_token_ttl, cfg.bcrypt_cost, cfg.tls_client_urls()) == (60, 4, ["https://127.0.0.1:2379"])
    env = {"ETCD_LISTEN_CLIENT_URLS": "https://127.0.0.1:2379,http://127.0.0.1:2381", "ETCD_AUTO_TLS": "true", "ETCD_BCRYPT_COST": "12"}
    cfg = parse([], env)
    assert (cfg.auto_tls, cfg.bcrypt_cost, cfg.tls_client_urls()) == (True, 12, ["https://127.0.0.1:2379"])
    assert parse(["--auto-tls=false"], {"ETCD_AUTO_TLS": "true"}).auto_tls is False, "a flag beats the environment"
    assert parse(["--client-cert-auth=1"], {}).client_cert_auth is True  # Go's ParseBool spellings


def test_tls_config_file_keys_are_etcds(tmp_path):
    conf = tmp_path / "tls.yaml"
    conf.write_text(
        "listen-client-urls: https://127.0.0.1:2379\nauth-token: simple\nauth-token-ttl: 30\nbcrypt-cost: 5\n"
        "client-transport-security:\n  cert-file: /s.pem\n  key-file: /k.pem\n  trusted-ca-file: /ca.pem\n  client-cert-auth: true\n"
        "peer-transport-security:\n  cert-file: ''\n  client-cert-auth: false\n"
    )
    cfg = parse(["--config-file", str(conf)], {})
    assert (cfg.cert_file, cfg.key_file, cfg.trusted_ca_file, cfg.client_cert_auth, cfg.auto_tls) == ("/s.pem", "/k.pem", "/ca.pem", True, False)
    assert (cfg.auth_token_ttl, cfg.bcrypt_cost) == (30, 5)
    conf.write_text("listen-client-urls: https://127.0.0.1:2379\nclient-transport-security:\n  auto-tls: true\n")
    assert parse(["--config-file", str(conf)], {}).auto_tls is True
    conf.write_text("cert-file: /s.pem\nkey-file: /k.pem\n")  # etcd would ignore these: petcd refuses them
    with pytest.raises(ConfigError, match="only under 'client-transport-security'"):
        parse(["--config-file", str(conf)], {})
    conf.write_text("listen-peer-urls: https://127.0.0.1:2380\ninitial-advertise-peer-urls: https://127.0.0.1:2380\n"
                    "peer-cert-allowed-cn: member\npeer-transport-security:\n  cert-file: /s.pem\n  key-file: /k.pem\n"
                    "  trusted-ca-file: /ca.pem\n  client-cert-auth: true\n")
    cfg = parse(["--config-file", str(conf)], {})
    assert (cfg.peer_cert_file, cfg.peer_key_file, cfg.peer_trusted_ca_file, cfg.peer_client_cert_auth, cfg.peer_cert_allowed_cn) == (
        "/s.pem", "/k.pem", "/ca.pem", True, "member")
    conf.write_text("peer-transport-security:\n  crl-file: /crl.pem\n")
    with pytest.raises(ConfigError, match="'peer-transport-security.crl-file' is not supported by petcd"):
        parse(["--config-file", str(conf)], {})


def _jwt_keys(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    paths = {}
    for name, key in (("rsa", rsa_key), ("ec", ec_key)):
        priv, pub = tmp_path / f"{name}.key", tmp_path / f"{name}.pub"
        priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        paths[name] = (str(pub), str(priv))
    return paths


def test_auth_token_jwt_is_parsed_and_checked(tmp_path):
    keys = _jwt_keys(tmp_path)
    pub, priv = keys["rsa"]
    token = f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=10m"
    options = parse(["--auth-token", token], {}).auth_token_options()
    assert (options.kind, options.sign_method, options.pub_key, options.priv_key, options.ttl_ms) == ("jwt", "RS256", pub, priv, 600_000)
    assert parse(["--auth-token", f"jwt,pub-key={keys['ec'][0]},sign-method=ES256"], {}).auth_token_options().ttl_ms == 300_000
    bad = {
        "nope": 'unknown token type "nope"',
        f"jwt,pub-key={pub},priv-key={priv}": 'invalid sign-method ""',
        f"jwt,pub-key={pub},sign-method=RS999": 'invalid sign-method "RS999"',
        "jwt,sign-method=RS256": "missing key data",
        "jwt,pub-key=/no/such/file,sign-method=RS256": "pub-key /no/such/file: No such file or directory",
        f"jwt,pub-key={keys['ec'][0]},sign-method=RS256": "is not a key for RS256",
        f"jwt,pub-key={priv},sign-method=RS256": "is not a PEM public key",
        f"jwt,pub-key={pub},sign-method=RS256,ttl=soon": "ttl: invalid duration",
        f"jwt,pub-key={pub},sign-method=RS256,colour=blue": "unknown jwt option colour",
        f"jwt,pub-key={pub},pub-key={pub},sign-method=RS256": 'option "pub-key" given twice',
        "jwt,pub-key": 'option "pub-key" is not name=value',
        "simple,ttl=5m": "the simple token takes no options",
    }
    for value, why in bad.items():
        with pytest.raises(ConfigError) as err:
            parse(["--auth-token", value], {})
        assert str(err.value).startswith(f'invalid --auth-token "{value}": auth: invalid auth options (')
        assert why in str(err.value), (value, str(err.value))


PEER_TLS_URLS = ["--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls", "https://127.0.0.1:2380"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (TLS_URL, "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme"),
        ([*TLS_URL, "--cert-file", "s.pem"], "KeyFile and CertFile must both be present[key: , cert: s.pem]"),
        (["--auto-tls", "--client-cert-auth"], "--client-cert-auth and --trusted-ca-file need --cert-file and --key-file: "
         "with --auto-tls alone etcd ignores them, and petcd does not ignore a flag"),
        (["--client-cert-auth=maybe"], 'invalid boolean value "maybe" for flag -client-cert-auth: parse error'),
        (["--bcrypt-cost", "3"], "--bcrypt-cost 3 is out of bcrypt's range [4, 31]"),
        (["--bcrypt-cost", "32"], "--bcrypt-cost 32 is out of bcrypt's range [4, 31]"),
        (["--auth-token-ttl", "-1"], 'invalid value "-1" for flag -auth-token-ttl: parse error'),
        (["--peer-cert-file", "p.pem"], "KeyFile and CertFile must both be present[key: , cert: p.pem]"),
        ([*PEER_TLS_URLS], "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"),
        ([*PEER_TLS_URLS, "--peer-auto-tls", "--peer-client-cert-auth"], "--peer-client-cert-auth and --peer-trusted-ca-file need "
         "--peer-cert-file and --peer-key-file: with --peer-auto-tls alone etcd ignores them, and petcd does not ignore a flag"),
        ([*PEER_TLS_URLS, "--peer-cert-file", "p.pem", "--peer-key-file", "k.pem", "--peer-client-cert-auth"],
         "--peer-client-cert-auth needs --peer-trusted-ca-file (the CA that signs the members' certificates)"),
        (["--listen-peer-urls", "https://127.0.0.1:2380", "--peer-auto-tls"],
         "http://localhost:2380: with peer TLS every peer URL must be https:// (petcd cannot mix plain and TLS peers)"),
        (["--peer-crl-file", "c.pem"], "--peer-crl-file: certificate revocation lists are not supported by petcd yet"),
        (["--cipher-suites", "x"], "--cipher-suites: choosing TLS cipher suites is not supported by petcd yet"),
    ],
)
def test_bad_tls_and_auth_flags_say_what_is_wrong(argv, message):
    with pytest.raises(ConfigError) as err:
        parse(argv, {})
    assert str(err.value) == message


def test_peer_tls_variables():
    with pytest.raises(ConfigError, match="ETCD_PEER_CRL_FILE: certificate revocation lists are not supported by petcd yet"):
        parse([], {"ETCD_PEER_CRL_FILE": "c.pem"})
    cfg = parse(PEER_TLS_URLS, {"ETCD_PEER_AUTO_TLS": "true"})
    assert cfg.peer_auto_tls and cfg.peer_tls()


def _gateway_spec(server) -> dict:
    """The JSON spec the supervisor gave its gateway process (read from /proc)."""
    import json

    def spec():
        with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as f:
            for pid in f.read().split():
                with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                    args = cmd.read().decode().split("\0")
                if "petcd.rpc.gateway" in args:
                    return json.loads(args[args.index("petcd.rpc.gateway") + 1])
        return None

    return wait_until(spec, 30, "the gateway process runs")


def test_gateway_spec_carries_auth_and_tls_settings(tmp_path):
    keys = _jwt_keys(tmp_path)
    token = f"jwt,pub-key={keys['rsa'][0]},priv-key={keys['rsa'][1]},sign-method=RS256"
    server = start_petcd(str(tmp_path / "d"), "--auth-token", token, "--auth-token-ttl", "42", "--bcrypt-cost", "6")
    try:
        spec = _gateway_spec(server)
    finally:
        assert server.stop() == 0
    assert (spec["auth_token"], spec["auth_token_ttl_s"], spec["bcrypt_cost"]) == (token, 42, 6)
    assert (spec["tls_listen"], spec["cert_file"], spec["key_file"], spec["trusted_ca_file"], spec["client_cert_auth"]) == ([], "", "", "", False)


def test_help_lists_every_flag_petcd_takes():
    import dataclasses
    import re
    import subprocess
    import sys

    from petcd.rpc.config import ServerConfig

    out = subprocess.run([sys.executable, "-m", "petcd.rpc.server_cli", "--help"], capture_output=True, text=True)
    listed = set(re.findall(r"^  --([a-z0-9-]+)", out.stdout + out.stderr, re.M))
    taken = {f.name.replace("_", "-") for f in dataclasses.fields(ServerConfig)}
    assert taken <= listed, f"petcd --help does not list: {sorted(taken - listed)}"


def test_the_grpc_server_is_petcds_own_unless_grpcio_is_asked_for():
    assert parse([], {}).experimental_grpc_server == "builtin"
    assert parse(["--experimental-grpc-server", "grpcio"], {}).experimental_grpc_server == "grpcio"
    with pytest.raises(ConfigError) as err:
        parse(["--experimental-grpc-server", "h2o"], {})
    assert str(err.value) == '--experimental-grpc-server "h2o": want grpcio or builtin'
