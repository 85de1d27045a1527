"""`petcd local-cluster CONFIG...`: run one member per config file in the foreground until Ctrl-C.

Each member's log lines are prefixed with its config file's name. A member
that dies is reported and the others go on (a cluster survives a minority);
Ctrl-C or SIGTERM stops them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import IO

from petcd.rpc.config import ConfigError, parse

_STOP_GRACE_S = 15.0


def _pump(prefix: str, stream: IO[bytes], lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        with lock:
            sys.stdout.write(f"{prefix} | {line.decode(errors='replace')}")
            sys.stdout.flush()


def run(configs: list[str]) -> int:
    if not configs:
        print("petcd local-cluster: give one config file per member (e.g. configs/local-3/*.yaml)", file=sys.stderr)
        return 2
    for path in configs:
        try:
            parse(["--config-file", path], {})
        except ConfigError as e:
            print(f"petcd local-cluster: {path}: {e}", file=sys.stderr)
            return 2
    lock = threading.Lock()
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    width = max(len(os.path.basename(p)) for p in configs)
    for path in configs:
        name = os.path.splitext(os.path.basename(path))[0].ljust(width)
        proc = subprocess.Popen(
            [sys.executable, "-m", "petcd.rpc.server_cli", "--config-file", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        threading.Thread(target=_pump, args=(name, proc.stdout, lock), daemon=True).start()
        procs.append((name, proc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    reported: set[str] = set()
    while not stop.wait(0.2):
        for name, proc in procs:
            if proc.poll() is not None and name not in reported:
                reported.add(name)
                with lock:
                    print(f"{name} | exited with status {proc.returncode}", flush=True)
        if len(reported) == len(procs):
            return 1
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for _, proc in procs:
        try:
            proc.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0
