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
