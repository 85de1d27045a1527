"""`petcd`: start a member with etcd's flags (`petcd --help`)."""

from __future__ import annotations

import os
import sys

from petcd.rpc.config import ConfigError, parse
from petcd.rpc.maintenance_service import SERVER_VERSION

USAGE = """Usage:

  petcd [flags]
    Start a petcd member (etcd's flags and config-file keys).
  petcd --version
    Show the version.
  petcd sim run --seed S [--members N] [--ops K] [--faults LIST] [--trace] [--history FILE] [--report FILE|DIR/]
  petcd sim swarm --seeds A-B [--faults LIST] [--progress]
    Simulate a whole cluster under faults, reproducibly from a seed (see README).
  petcd check HISTORY [--report out.html]
    Run the checkers (linearizability, watch, lease, lock) on a recorded history.
  petcd chaos [--server petcd|etcd] [--net hook|netns] [--duration S] [--faults kill,pause,partition] [--schedule FILE]
    Fault runs against real processes, judged by the same checkers.
  petcd bench put|range|txn-put|txn-mixed|watch|lease-keepalive|check-perf [--compare etcd] [flags]
    Benchmark petcd or any etcd endpoint; with --compare etcd, fresh petcd and etcd side by side.
  petcd local-cluster CONFIG...
    Run one member per config file in the foreground (e.g. configs/local-3/*.yaml); Ctrl-C stops them.

Member flags:
  --name 'default'                       human-readable name for this member
  --data-dir '${name}.etcd'              path to the data directory
  --wal-dir ''                           path to the dedicated directory of the Raft log (default: in the data directory)
  --listen-client-urls 'http://localhost:2379'
  --listen-client-http-urls ''           URLs serving only HTTP (JSON gateway, /health, /metrics); the client URLs then serve gRPC only
  --listen-metrics-urls ''               URLs serving only /metrics and /health
  --advertise-client-urls 'http://localhost:2379'
  --listen-peer-urls 'http://localhost:2380'
  --initial-advertise-peer-urls 'http://localhost:2380'
  --initial-cluster 'default=http://localhost:2380'
  --initial-cluster-state 'new'          'new' or 'existing'
  --initial-cluster-token 'etcd-cluster'
  --heartbeat-interval 100               time (in milliseconds) of a heartbeat interval
  --election-timeout 1000                time (in milliseconds) for an election to timeout
  --max-txn-ops 128                      maximum number of operations permitted in a transaction
  --max-request-bytes 1572864            maximum client request size in bytes the server will accept
  --snapshot-count 100000                applied entries between compactions of the Raft log
  --quota-backend-bytes 0                size of the store past which writes raise NOSPACE (0: 2 GiB)
  --auto-compaction-mode 'periodic'      'periodic' (a duration) or 'revision' (a count)
  --auto-compaction-retention '0'        history to keep: '1h', '30m', a bare number of hours, or revisions; 0: off
  --config-file ''                       path to the server configuration file (etcd's YAML keys)
  --cert-file ''                         path to the client server TLS cert file (https:// client URLs)
  --key-file ''                          path to the client server TLS key file
  --trusted-ca-file ''                   path to the client server TLS trusted CA cert file (clients must show a cert it signed)
  --client-cert-auth 'false'             require client certs; a request without a token acts as the cert's Common Name
  --auto-tls 'false'                     client TLS using a generated self-signed cert (<data-dir>/fixtures/client)
  --auth-token 'simple'                  'simple' or 'jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m'
  --auth-token-ttl 300                   lifetime in seconds of a simple token
  --bcrypt-cost 10                       bcrypt cost factor for password hashing (4 to 31)
  --peer-cert-file ''                    path to the peer TLS cert file (https:// peer URLs)
  --peer-key-file ''                     path to the peer TLS key file
  --peer-trusted-ca-file ''              path to the CA that signs the members' certificates
  --peer-client-cert-auth 'false'        peers must show a certificate the CA signed
  --peer-cert-allowed-cn ''              only peers whose certificate names this Common Name
  --peer-auto-tls 'false'                peer TLS using a generated self-signed cert (encrypted, not verified)
  --experimental-initial-corrupt-check 'false'   compare hashes with peers before serving
  --experimental-corrupt-check-time '0s' the leader compares hashes this often; a diverged member raises CORRUPT
  --log-level 'info'                     debug, info, warn, error
  --logger 'zap'                         etcd's logger choice; petcd always logs JSON lines on stderr ('zap' or 'capnslog')
  --experimental-watch-progress-notify-interval '10m'   how often idle progress-notify watchers get a progress event
  --experimental-peer-fault-file ''      petcd only, for `petcd chaos`: a JSON file naming peers to cut off
  --experimental-grpc-server 'builtin'   petcd only: 'grpcio' serves gRPC with grpcio's server, not petcd's own (rpc/grpc_server.py)
Every flag can also be set as ETCD_<FLAG> (e.g. ETCD_DATA_DIR).
"""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help", "-help"):
        print(USAGE, end="")
        sys.exit(0)
    if args and args[0] == "sim":
        from petcd.sim import cli as sim_cli

        sys.exit(sim_cli.main(args[1:]))
    if args and args[0] == "check":
        from petcd.sim.check import cli as check_cli

        sys.exit(check_cli.main(args[1:]))
    if args and args[0] == "chaos":
        from petcd.sim import chaos

        sys.exit(chaos.main(args[1:]))
    if args and args[0] == "bench":
        from petcd.sim import bench

        sys.exit(bench.main(args[1:]))
    if args and args[0] == "local-cluster":
        from petcd.rpc import local_cluster

        sys.exit(local_cluster.run(args[1:]))
    if args and args[0] in ("--version", "-version"):
        print(f"petcd Version: {SERVER_VERSION}\nPython Version: {sys.version.split()[0]}")
        sys.exit(0)
    try:
        cfg = parse(args, os.environ)
        from petcd.rpc import member  # after parsing, so a flag error needs no heavy imports

        sys.exit(member.run(cfg))
    except ConfigError as e:
        print(f"petcd: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
