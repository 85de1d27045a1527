"""petcd's server configuration: etcd's flags, ETCD_* variables and YAML config-file keys.

Flags follow Go's flag package, as etcd's do: `-flag value`, `--flag value`,
`--flag=value`; a boolean flag takes no separate value. With --config-file,
as in etcd, the file is the whole configuration and other flags are ignored;
there, as in etcd's YAML, the client TLS keys (cert-file, key-file,
trusted-ca-file, client-cert-auth, auto-tls) sit under `client-transport-security`
and the peer ones under `peer-transport-security`.

Flags petcd cannot honour yet (CRLs, cipher suites, hostname checks) are refused at
start, never accepted and ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

import yaml


class ConfigError(Exception):
    """A configuration mistake; the message is the one line the user sees."""


@dataclass(slots=True)
class ServerConfig:
    name: str = "default"
    data_dir: str = ""  # default: "<name>.etcd"
    wal_dir: str = ""  # etcd's dedicated directory for the Raft log's segments; default: <data-dir>/member/raft
    listen_client_urls: str = "http://localhost:2379"
    advertise_client_urls: str = "http://localhost:2379"
    listen_peer_urls: str = "http://localhost:2380"
    initial_advertise_peer_urls: str = "http://localhost:2380"
    initial_cluster: str = ""  # default: "<name>=<initial-advertise-peer-urls>"
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    max_txn_ops: int = 128
    max_request_bytes: int = 1572864
    heartbeat_interval: int = 100  # ms
    election_timeout: int = 1000  # ms
    snapshot_count: int = 100000
    quota_backend_bytes: int = 0  # 0: etcd's default (2 GiB); < 0: no quota
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"  # periodic: a duration, or hours; revision: revisions; 0: off
    log_level: str = "info"
    experimental_watch_progress_notify_interval: str = "10m"
    # petcd only, for fault tests (`petcd chaos`): a JSON file naming peers to cut off; off when empty.
    experimental_peer_fault_file: str = ""
    experimental_grpc_server: str = "builtin"  # petcd only: "grpcio" serves gRPC with grpcio's server (rpc/grpc_server.py is the default)
    logger: str = "zap"
    # etcd 3.4's corruption checks (rpc/corrupt.py): compare HashKV with every peer before serving
    # (a restarted member), and, on the leader, every --experimental-corrupt-check-time (0: off).
    experimental_initial_corrupt_check: bool = False
    experimental_corrupt_check_time: str = "0s"
    # etcd 3.5's: URLs serving the HTTP endpoints only (/v3 JSON gateway, /health, /metrics,
    # /version); given, the client URLs serve gRPC only.
    listen_client_http_urls: str = ""
    listen_metrics_urls: str = ""  # etcd's: more listeners serving /metrics and /health (http:// only in petcd)
    config_file: str = ""
    # Client TLS (etcd's security flags; in a config file under `client-transport-security`).
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""  # as etcd 3.4: given, every client must show a certificate it signed
    client_cert_auth: bool = False  # a certificate is required, and its Common Name is the user of a request without a token
    auto_tls: bool = False  # a self-signed certificate in <data-dir>/fixtures/client, unless certificates are given
    # Auth (the auth store uses them; checked here so that a mistake stops the start).
    auth_token: str = "simple"  # "simple" or "jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m"
    auth_token_ttl: int = 300  # seconds a simple token lives without use
    bcrypt_cost: int = 10
    # Peer TLS (in a config file under `peer-transport-security`, but peer-cert-allowed-cn).
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_trusted_ca_file: str = ""  # given, a peer's certificate must be one it signed
    peer_client_cert_auth: bool = False  # peers must show a certificate (the CA checks it)
    peer_auto_tls: bool = False  # a self-signed certificate in <data-dir>/fixtures/peer, unless certificates are given
    peer_cert_allowed_cn: str = ""  # only peers whose certificate names this Common Name

    def auto_compaction(self) -> tuple[str, int]:
        """(mode, retention): "periodic" and milliseconds, or "revision" and revisions; retention 0: off.

        As etcd's parseCompactionRetention: a bare integer is hours (periodic) or revisions
        (revision), anything else a Go duration."""
        mode, text = self.auto_compaction_mode, self.auto_compaction_retention.strip() or "0"
        if mode not in ("periodic", "revision"):
            raise ConfigError(f'unknown auto-compaction-mode "{mode}"')
        if re.fullmatch(r"\d+", text):
            return mode, int(text) * (3_600_000 if mode == "periodic" else 1)
        try:
            return mode, parse_duration_ms(text)
        except ConfigError:
            raise ConfigError(f'error parsing CompactionRetention: time: invalid duration "{text}"') from None

    @property
    def corrupt_check_time_ms(self) -> int:
        """--experimental-corrupt-check-time in milliseconds; 0: no periodic check."""
        text = self.experimental_corrupt_check_time.strip()
        if text in ("0", ""):
            return 0
        try:
            return parse_duration_ms(text)
        except ConfigError:
            raise ConfigError(f'invalid value "{text}" for flag -experimental-corrupt-check-time: parse error') from None

    @property
    def watch_progress_notify_interval_ms(self) -> int:
        return parse_duration_ms(self.experimental_watch_progress_notify_interval)

    def client_urls(self) -> list[str]:
        return _split(self.listen_client_urls)

    def client_http_urls(self) -> list[str]:
        return _split(self.listen_client_http_urls)

    def tls_client_urls(self) -> list[str]:
        """The https client URLs, gRPC and HTTP-only ones (they share the client TLS settings)."""
        return [u for u in [*self.client_urls(), *self.client_http_urls()] if urlsplit(u).scheme == "https"]

    def client_tls_given(self) -> bool:
        """etcd's !ClientTLSInfo.Empty(): a certificate or a key file was given."""
        return bool(self.cert_file or self.key_file)

    def peer_tls(self) -> bool:
        """Whether member-to-member traffic runs in TLS (this member's peer URLs are https)."""
        return any(urlsplit(u).scheme == "https" for u in _split(self.listen_peer_urls))

    def peer_tls_given(self) -> bool:
        return bool(self.peer_cert_file or self.peer_key_file)

    def auth_token_options(self) -> AuthTokenOptions:
        return parse_auth_token(self.auth_token)

    def peers(self) -> dict[str, list[str]]:
        """--initial-cluster as {name: [peer urls]}."""
        out: dict[str, list[str]] = {}
        for item in _split(self.initial_cluster):
            name, sep, url = item.partition("=")
            if not sep or not name or not url:
                raise ConfigError(f"invalid value {self.initial_cluster!r} for flag -initial-cluster: want name=url pairs")
            out.setdefault(name, []).append(url)
        return out


_FLAG_NAMES = {f.name.replace("_", "-"): f.name for f in fields(ServerConfig)}
_INT_FLAGS = {f.name for f in fields(ServerConfig) if f.type in ("int", int)}
_BOOL_FLAGS = {f.name for f in fields(ServerConfig) if f.type in ("bool", bool)}
_UINT_FLAGS = {"auth_token_ttl", "bcrypt_cost"}  # Go uint flags: a negative value does not parse
# etcd's client TLS flags that a config file sets only inside `client-transport-security`.
_TLS_KEYS = ("cert-file", "key-file", "client-cert-auth", "trusted-ca-file", "auto-tls")
_PEER_TLS_KEYS = {k: "peer-" + k for k in _TLS_KEYS}  # `peer-transport-security` keys -> flags
# etcd flags petcd cannot honour yet: refused at start, never ignored.
_REFUSED = {
    "peer-crl-file": "certificate revocation lists are not supported by petcd yet",
    "peer-cert-allowed-hostname": "--peer-cert-allowed-hostname is not supported by petcd yet",
    "experimental-peer-skip-client-san-verification": "--experimental-peer-skip-client-san-verification is not supported by petcd yet",
    "client-crl-file": "certificate revocation lists are not supported by petcd yet",
    "client-cert-allowed-hostname": "--client-cert-allowed-hostname is not supported by petcd yet",
    "cipher-suites": "choosing TLS cipher suites is not supported by petcd yet",
}
_ACCEPTED_AND_IGNORED = {
    # etcd flags that petcd accepts for compatibility but that change nothing yet.
    "enable-v2": "bool",
    "enable-pprof": "bool",
    "strict-reconfig-check": "bool",
    "debug": "bool",
    "log-outputs": "str",
}


def parse(argv: list[str], env: Mapping[str, str]) -> ServerConfig:
    """Build the configuration from flags, then ETCD_* variables for flags not given; raises ConfigError."""
    values: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise ConfigError(f"'{arg}' is not a valid flag. See 'petcd --help'.")
        name, eq, value = arg.lstrip("-").partition("=")
        if name in _REFUSED:
            raise ConfigError(f"--{name}: {_REFUSED[name]}")
        if name not in _FLAG_NAMES and name not in _ACCEPTED_AND_IGNORED:
            raise ConfigError(f"flag provided but not defined: -{name}")
        is_bool = _ACCEPTED_AND_IGNORED.get(name) == "bool" or _FLAG_NAMES.get(name) in _BOOL_FLAGS
        if is_bool and not eq:
            value = "true"
        if not eq and not is_bool:
            i += 1
            if i >= len(argv):
                raise ConfigError(f"flag needs an argument: -{name}")
            value = argv[i]
        values[name] = value
        i += 1
    for flag in _FLAG_NAMES:
        env_name = "ETCD_" + flag.upper().replace("-", "_")
        if flag not in values and env_name in env:
            values[flag] = env[env_name]
    for flag, why in _REFUSED.items():
        env_name = "ETCD_" + flag.upper().replace("-", "_")
        if env.get(env_name, "") not in ("", "false"):
            raise ConfigError(f"{env_name}: {why}")
    if values.get("config-file"):
        return _finish(_from_file(values["config-file"]))
    return _finish(_apply(ServerConfig(), values, source="flag"))


def _from_file(path: str) -> ServerConfig:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"cannot load config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse config file {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} is not a YAML mapping")
    values = {str(k): _yaml_text(v) for k, v in data.items() if not isinstance(v, dict)}
    for key in _TLS_KEYS:
        if key in values:
            raise ConfigError(f"config file key {key!r}: etcd reads client TLS settings only under 'client-transport-security'")
    peer_tls = data.get("peer-transport-security") or {}
    if not isinstance(peer_tls, dict):
        raise ConfigError("config file key 'peer-transport-security' must be a mapping")
    for key, v in peer_tls.items():
        if key not in _PEER_TLS_KEYS:
            raise ConfigError(f"config file key 'peer-transport-security.{key}' is not supported by petcd")
        values[_PEER_TLS_KEYS[key]] = _yaml_text(v)
    client_tls = data.get("client-transport-security") or {}
    if not isinstance(client_tls, dict):
        raise ConfigError("config file key 'client-transport-security' must be a mapping")
    for key, v in client_tls.items():
        if key not in _TLS_KEYS:
            raise ConfigError(f"config file key 'client-transport-security.{key}' is not supported by petcd")
        values[key] = _yaml_text(v)
    known = {k: v for k, v in values.items() if k in _FLAG_NAMES and k != "config-file"}
    cfg = _apply(ServerConfig(), known, source="config file key")
    cfg.config_file = path
    return cfg


def _yaml_text(v: object) -> str:
    return "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _go_bool(raw: str) -> bool | None:
    """Go's strconv.ParseBool; None if `raw` is not a boolean."""
    if raw in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if raw in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def _apply(cfg: ServerConfig, values: dict[str, str], source: str) -> ServerConfig:
    for flag, raw in values.items():
        attr = _FLAG_NAMES.get(flag)
        if attr is None:
            continue  # accepted and ignored
        if attr in _BOOL_FLAGS:
            value = _go_bool(raw.strip())
            if value is None:
                raise ConfigError(f'invalid boolean value "{raw}" for {source} -{flag}: parse error')
            setattr(cfg, attr, value)
        elif attr in _INT_FLAGS:
            try:
                number = int(raw)
            except ValueError:
                raise ConfigError(f'invalid value "{raw}" for {source} -{flag}: parse error') from None
            if attr in _UINT_FLAGS and number < 0:
                raise ConfigError(f'invalid value "{raw}" for {source} -{flag}: parse error')
            setattr(cfg, attr, number)
        else:
            setattr(cfg, attr, raw)
    return cfg


def _finish(cfg: ServerConfig) -> ServerConfig:
    if not cfg.data_dir:
        cfg.data_dir = f"{cfg.name}.etcd"
    if not cfg.initial_cluster:
        cfg.initial_cluster = ",".join(f"{cfg.name}={u}" for u in _split(cfg.initial_advertise_peer_urls))
    if cfg.initial_cluster_state not in ("new", "existing"):
        raise ConfigError(f"invalid value {cfg.initial_cluster_state!r} for flag -initial-cluster-state: want new or existing")
    if cfg.log_level not in ("debug", "info", "warn", "error", "panic", "fatal"):
        raise ConfigError(f"unknown log level {cfg.log_level!r}")
    if cfg.logger == "capnslog":
        raise ConfigError("--logger capnslog is not supported by petcd: it logs JSON lines, as etcd's zap logger does (--logger zap)")
    if cfg.logger != "zap":
        raise ConfigError(f'unknown logger option "{cfg.logger}"')
    cfg.auto_compaction()  # validates
    if cfg.watch_progress_notify_interval_ms <= 0:
        raise ConfigError("--experimental-watch-progress-notify-interval must be positive")
    if cfg.corrupt_check_time_ms < 0:
        raise ConfigError("--experimental-corrupt-check-time must not be negative")
    if cfg.max_txn_ops <= 0 or cfg.max_request_bytes <= 0:
        raise ConfigError("--max-txn-ops and --max-request-bytes must be positive")
    if cfg.heartbeat_interval <= 0 or cfg.election_timeout < 5 * cfg.heartbeat_interval:
        raise ConfigError("--election-timeout must be at least 5 times --heartbeat-interval")
    for url in [*cfg.client_urls(), *cfg.client_http_urls(), *_split(cfg.listen_peer_urls), *_split(cfg.listen_metrics_urls)]:
        host_port(url)  # validates
    for url in _split(cfg.listen_metrics_urls):
        if urlsplit(url).scheme == "https":
            raise ConfigError(f"{url}: --listen-metrics-urls with https is not supported by petcd yet")
    if cfg.name not in cfg.peers():
        raise ConfigError(f"couldn't find local name {cfg.name!r} in the initial cluster configuration")
    peer_urls = [*_split(cfg.listen_peer_urls), *_split(cfg.initial_advertise_peer_urls), *(u for us in cfg.peers().values() for u in us)]
    _check_peer_tls(cfg, peer_urls)
    _check_client_tls(cfg)
    cfg.auth_token_options()  # validates
    if cfg.experimental_grpc_server not in ("grpcio", "builtin"):
        raise ConfigError(f'--experimental-grpc-server "{cfg.experimental_grpc_server}": want grpcio or builtin')
    if not BCRYPT_MIN_COST <= cfg.bcrypt_cost <= BCRYPT_MAX_COST:
        # etcd 3.4 logs a warning and hashes with the default cost instead; petcd does not ignore a flag.
        raise ConfigError(f"--bcrypt-cost {cfg.bcrypt_cost} is out of bcrypt's range [{BCRYPT_MIN_COST}, {BCRYPT_MAX_COST}]")
    return cfg


def _check_peer_tls(cfg: ServerConfig, peer_urls: list[str]) -> None:
    """etcd's checks of the peer TLS settings, plus refusals where petcd cannot do what etcd does."""
    if cfg.peer_tls_given() and not (cfg.peer_cert_file and cfg.peer_key_file):
        raise ConfigError(f"KeyFile and CertFile must both be present[key: {cfg.peer_key_file}, cert: {cfg.peer_cert_file}]")
    if not cfg.peer_tls():
        return
    if not cfg.peer_tls_given() and not cfg.peer_auto_tls:
        listen = host_port(next(u for u in _split(cfg.listen_peer_urls) if urlsplit(u).scheme == "https"))
        raise ConfigError(f"cannot listen on TLS for {listen}: KeyFile and CertFile are not presented")
    # petcd's peer transport runs every peer link through one TLS tunnel (rpc/peer_tls.py): a
    # cluster mixing http:// and https:// peer URLs is one etcd can run and petcd cannot.
    plain = [u for u in peer_urls if urlsplit(u).scheme != "https"]
    if plain:
        raise ConfigError(f"{plain[0]}: with peer TLS every peer URL must be https:// (petcd cannot mix plain and TLS peers)")
    if cfg.peer_auto_tls and not cfg.peer_tls_given() and (cfg.peer_client_cert_auth or cfg.peer_trusted_ca_file):
        raise ConfigError("--peer-client-cert-auth and --peer-trusted-ca-file need --peer-cert-file and --peer-key-file: "
                          "with --peer-auto-tls alone etcd ignores them, and petcd does not ignore a flag")
    if cfg.peer_client_cert_auth and not cfg.peer_trusted_ca_file:
        raise ConfigError("--peer-client-cert-auth needs --peer-trusted-ca-file (the CA that signs the members' certificates)")


def _check_client_tls(cfg: ServerConfig) -> None:
    """etcd's checks of the client TLS settings (embed.configureClientListeners, TLSInfo.baseConfig),
    plus refusals where etcd would silently drop a setting."""
    if cfg.client_tls_given() and not (cfg.cert_file and cfg.key_file):
        raise ConfigError(f"KeyFile and CertFile must both be present[key: {cfg.key_file}, cert: {cfg.cert_file}]")
    if cfg.auto_tls and not cfg.client_tls_given() and (cfg.client_cert_auth or cfg.trusted_ca_file):
        # etcd replaces the whole client TLS setting by the self-signed one, dropping these silently.
        raise ConfigError("--client-cert-auth and --trusted-ca-file need --cert-file and --key-file: "
                          "with --auto-tls alone etcd ignores them, and petcd does not ignore a flag")
    if not cfg.client_tls_given() and not cfg.auto_tls:
        for url in cfg.tls_client_urls():
            raise ConfigError(f"TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme")


BCRYPT_MIN_COST, BCRYPT_MAX_COST = 4, 31  # golang.org/x/crypto/bcrypt's MinCost, MaxCost
JWT_SIGN_METHODS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_JWT_OPTIONS = ("sign-method", "pub-key", "priv-key", "ttl")


@dataclass(frozen=True, slots=True)
class AuthTokenOptions:
    """A parsed --auth-token: kind "simple", or "jwt" with its sign method, key files and token TTL."""

    kind: str
    sign_method: str = ""
    pub_key: str = ""
    priv_key: str = ""
    ttl_ms: int = 300_000


def parse_auth_token(text: str) -> AuthTokenOptions:
    """etcd's decomposeOpts and jwtOptions: "simple" or "jwt,opt=value,..."; raises ConfigError
    naming what is wrong (etcd's own error for all of these is "auth: invalid auth options")."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f'invalid --auth-token "{text}": auth: invalid auth options ({why})')

    kind, *items = text.split(",")
    options: dict[str, str] = {}
    for item in items:
        pair = item.split("=")
        if len(pair) != 2:
            raise bad(f'option "{item}" is not name=value')
        if pair[0] in options:
            raise bad(f'option "{pair[0]}" given twice')
        options[pair[0]] = pair[1]
    if kind == "simple":
        if options:
            raise bad("the simple token takes no options")
        return AuthTokenOptions("simple")
    if kind != "jwt":
        raise bad(f'unknown token type "{kind}"; want simple or jwt')
    unknown = sorted(set(options) - set(_JWT_OPTIONS))
    if unknown:
        raise bad(f"unknown jwt option {', '.join(unknown)}")
    method = options.get("sign-method", "")
    if method.startswith("HS") and method in ("HS256", "HS384", "HS512"):
        raise bad(f"sign-method {method} is not supported by petcd yet; use one of {', '.join(JWT_SIGN_METHODS)}")
    if method not in JWT_SIGN_METHODS:
        raise bad(f'invalid sign-method "{method}"; want one of {", ".join(JWT_SIGN_METHODS)}')
    try:
        ttl_ms = parse_duration_ms(options["ttl"]) if options.get("ttl") else 300_000
    except ConfigError as e:
        raise bad(f"ttl: {e}") from None
    if ttl_ms <= 0:
        raise bad("ttl must be positive")
    pub, priv = options.get("pub-key", ""), options.get("priv-key", "")
    if not pub and not priv:
        raise bad("auth: missing key data: give pub-key and priv-key")
    for option, path in (("pub-key", pub), ("priv-key", priv)):
        if path:
            _check_jwt_key(path, option, method, bad)
    _check_with_token_provider(text)
    return AuthTokenOptions("jwt", method, pub, priv, ttl_ms)


def _check_with_token_provider(text: str) -> None:
    """What etcd accepts, the gateway's token provider (rpc/auth_tokens.py) may not support yet:
    ask it now, so that a start fails here with its reason instead of in the gateway process."""
    try:
        from petcd.rpc.auth_tokens import TokenSpecError, token_provider
    except ImportError:
        return
    try:
        token_provider(text, 300)
    except TokenSpecError as e:
        raise ConfigError(f'invalid --auth-token "{text}": not supported by petcd yet: {e}') from None


def _check_jwt_key(path: str, option: str, method: str, bad: Callable[[str], ConfigError]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise bad(f"{option} {path}: {e.strerror}") from None
    try:
        if option == "pub-key":
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise bad(f"{option} {path} is not a PEM {'public' if option == 'pub-key' else 'private'} key: {e}") from None
    want = (rsa.RSAPublicKey, rsa.RSAPrivateKey) if method[:2] in ("RS", "PS") else (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)
    if not isinstance(key, want):
        raise bad(f"{option} {path} is not a key for {method}")


def parse_duration_ms(text: str) -> int:
    """Go's duration spelling ("10m", "5s", "250ms", "1h30m") in milliseconds; raises ConfigError."""
    units = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1, "us": 0.001, "µs": 0.001, "ns": 0.000001}
    total, rest = 0.0, text.strip()
    match = re.fullmatch(r"((\d+(\.\d+)?)(h|ms|m|s|us|µs|ns))+", rest)
    if not match:
        raise ConfigError(f'invalid duration "{text}"')
    for number, _, unit in re.findall(r"(\d+(\.\d+)?)(h|ms|m|s|us|µs|ns)", rest):
        total += float(number) * units[unit]
    return int(total)


def host_port(url: str) -> str:
    """"http://127.0.0.1:2379" -> "127.0.0.1:2379"; raises ConfigError for what petcd cannot listen on."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ConfigError(f'invalid URL {url!r}: want http://host:port')
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    return f"{host}:{parts.port}"


def _split(csv: str) -> list[str]:
    return [s.strip() for s in csv.split(",") if s.strip()]
