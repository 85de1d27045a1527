"""The actor contract: what an actor may do, and how a runtime drives it.

An actor is a plain object that reacts to batches of messages and to timers.
It never does IO itself: it acts only through its `Context`, its durable state
included (`Context.disk`: the LMDB stores and files it keeps, see store/disk.py). Two runtimes
implement `Context` -- the ZeroMQ process runtime (`proc_runtime`) and the
simulation runtime (`petcd.sim`) -- so the code under simulation is the code
in production.

Addresses are strings "<member>/<role>", e.g. "m1/raft", "m1/apply", "m1/gw0".
Messages are msgpack-able dicts with a "t" (type) key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from petcd.store.disk import Disk

Message = dict[str, Any]
Envelope = tuple[str, Message]  # (sender address, message)

# A runtime hands an actor at most this many messages per turn, so one busy
# sender cannot starve timers or grow a turn without bound.
MAX_BATCH_MESSAGES = 4096


class Context(Protocol):
    """Everything an actor may do to the outside world."""

    @property
    def address(self) -> str:
        """This actor's own address."""
        ...

    def send(self, to: str, msg: Message) -> None:
        """Queue a message; the runtime sends one wire message per destination per turn."""
        ...

    def flush(self) -> None:
        """Send what was queued so far now, not at the end of the turn: before a slow write that
        those messages need not wait for (the Raft leader's appends, before its own log sync)."""
        ...

    def set_timer(self, name: str, delay_ms: int) -> None:
        """(Re)arm the named timer to fire once after `delay_ms`."""
        ...

    def cancel_timer(self, name: str) -> None:
        """Disarm the named timer if armed."""
        ...

    def now_ms(self) -> int:
        """Monotonic milliseconds (virtual time under simulation)."""
        ...

    def now_us(self) -> int:
        """The same clock in microseconds, for durations shorter than a millisecond (a peer's round trip)."""
        ...

    def random(self) -> float:
        """A uniform float in [0, 1) from the runtime's (seeded) source."""
        ...

    def log(self, level: str, msg: str, **fields: Any) -> None:
        """A structured log line."""
        ...

    def set_route(self, address: str, url: str) -> None:
        """Where `address` lives (a peer URL such as "http://10.0.0.2:2380"); the simulator ignores it."""
        ...

    def stop_member(self, reason: str, *, failed: bool = False) -> None:
        """Stop every actor of this member: it was removed from the cluster, or (`failed`) it cannot
        go on (its disk failed a write), which the process runtime reports as a failure."""
        ...

    @property
    def disk(self) -> Disk:
        """Where the actor keeps its durable state (store/disk.py): the process runtime's is the
        machine's disk, the simulator's a model of one that loses unsynced writes on power loss,
        fails an fsync or fills up. A write the disk cannot make durable raises (lmdb.Error or
        OSError): the actor must then stop its member, never carry on."""
        ...


class Actor(Protocol):
    """What a runtime calls. Each call runs to completion before the next.

    An actor whose turns end in a synced write may also name, in a `gathered_types` attribute, the
    message types worth waiting a moment for before a turn (see proc_runtime.Gather)."""

    def start(self, ctx: Context) -> None:
        """Called once, before any message, after the actor recovered its durable state."""
        ...

    def receive(self, ctx: Context, batch: list[Envelope]) -> None:
        """Handle every message that was pending, in arrival order."""
        ...

    def on_timer(self, ctx: Context, name: str) -> None:
        """A timer set with `ctx.set_timer` fired."""
        ...

    def stop(self) -> None:
        """Release resources (LMDB environments). The actor is not used afterwards."""
        ...


def member_of(address: str) -> str:
    """The member part of an address: "m1/raft" -> "m1"."""
    member, sep, _ = address.partition("/")
    assert sep, f"malformed address {address!r}"
    return member
