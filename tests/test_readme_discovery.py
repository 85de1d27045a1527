"""The README's service-discovery walk-through, run as written: the real etcdctl (bash, the blocks
copied from README.md) against a petcd member."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.servers import start_petcd
from tests.test_metrics import scrape, value
from tests.waiting import wait_until

README = Path(__file__).resolve().parent.parent / "README.md"
LEASE_TTL_S = 5


def discovery_blocks() -> list[str]:
    """The four ```sh blocks of the README's "Service discovery" section, in order."""
    text = README.read_text()
    section = text.split("### Service discovery, as etcd users do it", 1)[1].split("\n#", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 4, f"expected 4 sh blocks in the section, found {len(blocks)}"
    return blocks


@pytest.fixture
def petcd(tmp_path):
    server = start_petcd(str(tmp_path / "petcd"))
    yield server
    server.stop()


def test_the_readme_service_discovery_blocks_work_as_written(petcd):
    watch_block, register_block, find_block, crash_block = discovery_blocks()
    env = {**os.environ, "ETCDCTL_ENDPOINTS": petcd.endpoint, "ETCDCTL_API": "3"}
    with tempfile.TemporaryFile() as watched:
        watcher = subprocess.Popen(["bash", "-c", watch_block], env=env, stdout=watched, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            # In the README the watcher is started first, by hand; here, wait until petcd holds its watch.
            wait_until(lambda: value(scrape(petcd.endpoint), "etcd_debugging_mvcc_watcher_total") == 1, 30, "the watch is created")
            # The instance's shell: register, be found, crash. One bash, so $KEEPALIVE carries over.
            # Should a block fail, bash -e exits: the trap stops the keep-alive it started (else it outlives the test).
            script = "trap 'kill $KEEPALIVE 2>/dev/null || true' EXIT\n" + register_block + "echo FOUND:\n" + find_block + crash_block
            out = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stdout + out.stderr
            assert out.stdout.split("FOUND:\n", 1)[1] == "10.0.0.5:8080\n", out.stdout

            def seen() -> str:
                watched.seek(0)
                return watched.read().decode()

            wait_until(lambda: "PUT\n/services/web/instance-1\n10.0.0.5:8080\n" in seen(), 30, "the watcher sees the instance arrive")
            wait_until(lambda: "DELETE\n/services/web/instance-1\n" in seen(), 30 + LEASE_TTL_S,
                       "the watcher sees the crashed instance go when its lease expires")
        finally:
            os.killpg(watcher.pid, 9)
            watcher.wait()
    after = subprocess.run(["bash", "-c", find_block], env=env, capture_output=True, text=True, timeout=30)
    assert after.returncode == 0 and after.stdout == "", after.stdout + after.stderr
