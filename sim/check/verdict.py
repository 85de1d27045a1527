"""The result every checker returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


@dataclass(slots=True)
class Verdict:
    """`ok` is True only when the property certainly holds.

    A checker that could not decide (the linearizability search ran out of its
    step budget) returns ok=False with details["status"] == "unknown"; `status`
    gives the three-way answer ("ok", "fail" or "unknown").
    """

    ok: bool
    checker: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.ok:
            return OK
        return UNKNOWN if self.details.get("status") == UNKNOWN else FAIL

    def line(self) -> str:
        """One line for a terminal: `checker status: summary`."""
        return f"{self.checker} {self.status}: {self.summary}"


def overall(verdicts: list[Verdict]) -> str:
    """"fail" if any failed, else "unknown" if any is undecided, else "ok" (also for no verdicts)."""
    statuses = {v.status for v in verdicts}
    if FAIL in statuses:
        return FAIL
    if UNKNOWN in statuses:
        return UNKNOWN
    return OK
