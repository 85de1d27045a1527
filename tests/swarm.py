"""Run swarm seeds as `petcd sim swarm --seeds A-B --faults LIST` does, for tests with planted bugs."""

from __future__ import annotations

from collections.abc import Iterable

from petcd.sim.cli import swarm_mix
from petcd.sim.run import run


def failed_verdicts(seeds: Iterable[int], faults: list[str], ops: int = 300) -> dict[int, list[str]]:
    """Seed -> its failed verdicts ("checker: summary"), each seed with the mix it draws from `faults`."""
    failed = {}
    for seed in seeds:
        members, mix = swarm_mix(seed, faults)
        report = run(seed, members, ops, mix)
        failed[seed] = [f"{v.checker}: {v.summary}" for v in report.verdicts if not v.ok]
    return failed
