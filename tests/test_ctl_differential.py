"""petcdctl against etcdctl 3.4: the same scripts, each tool against its own
fresh real etcd (same member/cluster IDs, same request history), compared on
stdout, stderr and exit code after normalisation (see test_ctl_harness)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.etcd_fixture import EtcdServer, closed_port
from tests.test_ctl_harness import ETCDCTL, PETCDCTL, diff_runs, run_script
from tests.test_ctl_scripts import SCRIPTS


def _run_pair(name: str):
    script = SCRIPTS[name]
    dead = "127.0.0.1:%d" % closed_port()
    with EtcdServer() as a, EtcdServer() as b:
        with ThreadPoolExecutor(2) as pool:
            fa = pool.submit(run_script, script, ETCDCTL, a.endpoint, dead)
            fb = pool.submit(run_script, script, PETCDCTL, b.endpoint, dead)
            return (fa.result(), a.endpoint), (fb.result(), b.endpoint)


@pytest.fixture(scope="session")
def differential_runs():
    """All scripts, run concurrently (they are independent); a script that
    could not run is reported by its own test."""
    with ThreadPoolExecutor(len(SCRIPTS)) as pool:
        futures = {name: pool.submit(_run_pair, name) for name in SCRIPTS}
        return {name: f for name, f in futures.items()}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_petcdctl_matches_etcdctl(differential_runs, name):
    (expected, expected_ep), (actual, actual_ep) = differential_runs[name].result()
    problems = diff_runs(SCRIPTS[name], expected, actual, expected_ep, actual_ep)
    assert not problems, "%d differing steps:\n%s" % (len(problems), "\n".join(problems))


def test_petcdctl_names_itself_and_says_what_it_does_not_offer():
    """Its usage and version say petcdctl (commands print etcdctl's output); help lists only the
    commands it offers, and the others say why not, with etcdctl's feature-error exit status."""
    import shutil
    import subprocess

    tool = shutil.which("petcdctl")
    assert tool, "petcdctl not on PATH (make test puts .venv/bin there)"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([tool, *args], capture_output=True, text=True, timeout=30)

    version = run("version")
    assert version.returncode == 0 and version.stdout.splitlines() == ["petcdctl version: 0.1.0", "API version: 3.4"]
    usage = run("--help").stdout
    assert usage.startswith("NAME:\n\tpetcdctl - A simple command line client for etcd3.\n\nUSAGE:\n\tpetcdctl [flags]\n")
    listed = {line.split("\t")[1] for line in usage.splitlines() if line.startswith("\t") and "\t" in line[1:]}
    assert {"get", "put", "snapshot save", "lease grant"} <= listed
    assert not listed & {"migrate", "make-mirror", "check perf", "check datascale", "completion bash"}
    migrate = run("migrate")
    assert migrate.returncode == 4
    assert migrate.stderr == "Error: migrate is not supported by petcdctl: petcd has no v2 store to migrate from\n"
    assert "etcdctl's make-mirror works against petcd" in run("make-mirror", "127.0.0.1:1").stderr
