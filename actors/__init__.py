"""petcd.actors.

The actors' safety checks (Raft invariants, log matching, single writer) are `assert` statements,
which `python -O` strips. petcd therefore refuses to run optimised: every process that runs an
actor imports this package first, so none can run without its checks.
"""

if not __debug__:
    raise SystemExit(
        "petcd: refusing to run under python -O (or PYTHONOPTIMIZE): it would strip petcd's safety checks"
    )
