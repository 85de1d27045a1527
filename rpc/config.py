"""petcd's server configuration: etcd's flags, ETCD_* variables and YAML config-file keys.

Flags follow Go's flag package, as etcd's do: `-flag value`, `--flag value`,
`--flag=value`; a boolean flag takes no separate value. With --config-file,
as in etcd, the file is the whole configuration and other flags are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

import yaml


class ConfigError(Exception):
    """A configuration mistake; the message is the one line the user sees."""


@dataclass(slots=True)
class ServerConfig:
    name: str = "default"
    data_dir: str = ""  # default: "<name>.etcd"
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
    logger: str = "zap"
    config_file: str = ""

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
    def watch_progress_notify_interval_ms(self) -> int:
        return parse_duration_ms(self.experimental_watch_progress_notify_interval)

    def client_urls(self) -> list[str]:
        return _split(self.listen_client_urls)

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
        if name not in _FLAG_NAMES and name not in _ACCEPTED_AND_IGNORED:
            raise ConfigError(f"flag provided but not defined: -{name}")
        is_bool = _ACCEPTED_AND_IGNORED.get(name) == "bool"
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
    values = {str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in data.items()}
    known = {k: v for k, v in values.items() if k in _FLAG_NAMES and k != "config-file"}
    cfg = _apply(ServerConfig(), known, source="config file key")
    cfg.config_file = path
    return cfg


def _apply(cfg: ServerConfig, values: dict[str, str], source: str) -> ServerConfig:
    for flag, raw in values.items():
        attr = _FLAG_NAMES.get(flag)
        if attr is None:
            continue  # accepted and ignored
        if attr in _INT_FLAGS:
            try:
                setattr(cfg, attr, int(raw))
            except ValueError:
                raise ConfigError(f'invalid value "{raw}" for {source} -{flag}: parse error') from None
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
    cfg.auto_compaction()  # validates
    if cfg.watch_progress_notify_interval_ms <= 0:
        raise ConfigError("--experimental-watch-progress-notify-interval must be positive")
    if cfg.max_txn_ops <= 0 or cfg.max_request_bytes <= 0:
        raise ConfigError("--max-txn-ops and --max-request-bytes must be positive")
    if cfg.heartbeat_interval <= 0 or cfg.election_timeout < 5 * cfg.heartbeat_interval:
        raise ConfigError("--election-timeout must be at least 5 times --heartbeat-interval")
    for url in [*cfg.client_urls(), *_split(cfg.listen_peer_urls)]:
        host_port(url)  # validates
    if cfg.name not in cfg.peers():
        raise ConfigError(f"couldn't find local name {cfg.name!r} in the initial cluster configuration")
    return cfg


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
    if parts.scheme == "https":
        raise ConfigError(f"{url}: TLS is not supported yet; use http://")
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    return f"{host}:{parts.port}"


def _split(csv: str) -> list[str]:
    return [s.strip() for s in csv.split(",") if s.strip()]
