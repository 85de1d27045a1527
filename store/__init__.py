"""petcd.store.

The store's invariants are `assert` statements; like petcd.actors, this package refuses to be
loaded under `python -O`, which would strip them.
"""

if not __debug__:
    raise SystemExit(
        "petcd: refusing to run under python -O (or PYTHONOPTIMIZE): it would strip petcd's safety checks"
    )
