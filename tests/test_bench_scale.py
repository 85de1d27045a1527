"""sim/bench_scale.py at a tiny scale, on petcd and real etcd: every figure, both servers, sane values.

Figures are not compared with thresholds; what is checked is that every scenario ran to the end
on both servers and counted what it should.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest

from petcd.sim import bench_scale

KEYS, WATCHERS, LEASES, PREFIX_PUTS = 2000, 200, 200, 5
# May be 0 or below (an expiry measured from the client's side) or plain counts checked below.
SIGNED = {"first key gone after first expiry s", "last key gone after last expiry s", "spread s", "put errors"}


@pytest.fixture(scope="module")
def report() -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = bench_scale.main([
            "--keys", str(KEYS), "--watchers", str(WATCHERS), "--leases", str(LEASES), "--lease-ttl", "2",
            "--reads", "100", "--wide-reads", "5", "--put-window", "0.5", "--prefix-puts", str(PREFIX_PUTS),
            "--server", "both", "--json",
        ])
    assert code == 0
    return json.loads(out.getvalue())


def test_every_figure_for_both_servers(report):
    figures = report["figures"]
    assert set(figures) == {"petcd", "etcd"}
    assert list(figures["petcd"]) == list(bench_scale.SCENARIOS)
    for scenario in bench_scale.SCENARIOS:
        assert figures["petcd"][scenario].keys() == figures["etcd"][scenario].keys(), scenario
    for server, scenarios in figures.items():
        for scenario, values in scenarios.items():
            for name, v in values.items():
                assert isinstance(v, (int, float)) and math.isfinite(v), (server, scenario, name, v)
                if name not in SIGNED:
                    assert v > 0, (server, scenario, name, v)


@pytest.mark.parametrize("server", ["petcd", "etcd"])
def test_counts(report, server):
    f = report["figures"][server]
    assert f["keys"]["wide range keys"] == KEYS  # fewer keys than 10,000: the range holds them all
    assert f["compaction"]["put errors"] == 0
    assert f["compaction"]["puts sent while compacting"] >= 1
    assert f["watch"]["distinct keys events"] == WATCHERS
    assert f["watch"]["one prefix events"] == WATCHERS * PREFIX_PUTS
    assert f["leases"]["keys attached"] == f["leases"]["keys removed"] == LEASES
    assert f["leases"]["spread s"] >= 0
    for scenario, values in f.items():
        for name in values:
            if name.endswith(" p50 ms"):
                base = name.removesuffix(" p50 ms")
                assert values[name] <= values[f"{base} p99 ms"] <= values.get(f"{base} max ms", math.inf), (scenario, base)
