"""What the web layer may ask of a cluster, written down: one Protocol per role.

Four implementations answer it: `LiveCluster` (the simulated cluster on the wall clock),
`ProcessLive` (`serve --processes`: real replica processes on this host), `AttachedLive`
(`serve --attach`: replicas running elsewhere, over their HTTP API) and `ReplicaService` (one
real replica serving its own HTTP API). The app is typed against
these roles, never against a union of classes, so a member missing from one is a type
error (mypy, in the tests), and one conformance test (`tests/test_contract.py`) runs every
role against every implementation that plays it:

    role                  LiveCluster  ProcessLive          AttachedLive              ReplicaService
    ClusterData           yes          yes                  yes                       yes
    ClusterObserver       yes          yes                  yes                       -
    CoordinationInputs    yes          yes                  yes                       -
    ClusterFaults         yes          yes                  partition; crash: 409     -
    SimulationControls    yes          refuses (409)        refuses (409)             -     (reset included)
    ClusterLifecycle      yes          yes                  yes                       -
    DashboardCluster      all of the above: what `create_app` takes

Threading and blocking, as memberlist's `Delegate` and Starlette's `BaseRoute` state theirs:
every member is called on the event loop's thread, one at a time (the replicas are plain
objects, not thread-safe). Synchronous members must return promptly and never wait on the
network; the ones that may take long say so. `async` members may await, but must not
block the loop while they do.

Answers are plain JSON-ready values (the shapes below, as `TypedDict`s), so the HTTP
layer can return them as they are and the page reads the same shapes from the simulator
and from processes. Values every implementation derives the same way (topology,
convergence, the groups of a partition) are computed once, in `derived`.

Errors are the library's typed errors (`errors`), each raised before anything changed,
and mapped to HTTP statuses by their `code` (`app/web/errors.py`). A relayed replica's error
keeps its code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, Literal, NotRequired, Protocol, TypedDict

if TYPE_CHECKING:
    import asyncio

from .geo import LatencyModel, Placement
from .idempotency import Answer, Once
from .batch import BatchOp
from .listing import Page

# -- the shapes of the answers --------------------------------------------------------------

Status = Literal["up", "down"]


class ReplicaStatus(TypedDict):
    """One replica now (`state_of`): the WebSocket stream's `state` event."""

    status: Status
    version_vector: dict[str, int]  # per actor, the highest write applied
    digest: str  # equal digests, equal state
    incarnation: int  # how many times it came back without its state
    keys: int


class ReplicaState(TypedDict):
    """One replica in `GET /api/replicas`."""

    id: str
    status: Status
    version_vector: dict[str, int]
    digest: str
    incarnation: int


class Convergence(TypedDict):
    """`GET /api/convergence`."""

    converged: bool  # every replica that is up holds the same state
    digests: dict[str, str]  # of each replica that is up
    in_flight: int  # messages on the wire


class TopologyReplica(TypedDict):
    id: str
    city: str
    region: str
    lat: float
    lon: float


class Topology(TypedDict):
    """`GET /api/topology`: the replicas, where they are, the modelled round trips."""

    replicas: list[TopologyReplica]
    rtt_ms: dict[str, dict[str, float]]  # replica -> other replica -> ms


class ClockInfo(TypedDict):
    """The stream's `clock` event."""

    now_ms: float
    speed: float
    paused: bool
    strategy: str
    loss: float
    processes: NotRequired[bool]  # present (true) over real processes
    attached: NotRequired[bool]  # present (true) over replicas running elsewhere (`serve --attach`)
    effective_speed: NotRequired[float]  # the simulator's: virtual per wall time lately (below speed: CPU-bound)


class SimInfo(TypedDict):
    """`GET /api/sim`: the simulation's settings and virtual time."""

    strategy: str
    speed: float
    effective_speed: float  # virtual per wall time lately: below `speed` when the CPU cannot keep up
    loss: float
    paused: bool
    now_ms: float


class TrafficStats(TypedDict):
    """Message counters (the stream's `counters` event): by message kind, drops by reason."""

    sent: dict[str, int]
    delivered: dict[str, int]
    dropped: dict[str, int]
    dropped_by_reason: dict[str, int]
    in_flight: int
    writes: int
    unshown: int  # messages left out of the event stream (a simulated cluster streams a sample of a busy wire)


# -- what the roles refer to ----------------------------------------------------------------


class EventStream(Protocol):
    """The cluster's events as JSON-ready dicts (`app/web/events.py` has the kinds and shape)."""

    def subscribe(self, fn: Callable[[dict], object]) -> Callable[[], None]:
        """Call `fn` with every event from now on; returns the call that stops it. `fn` runs
        synchronously inside whatever made the event (a request, the simulator's loop), with
        one dict shared by every subscriber: it must not block, and must not mutate it."""
        ...

    def publish(self, event: dict) -> None: ...


class ChangeStream(Protocol):
    """One watch of a replica's changes (`GET /api/replicas/{id}/watch`): Server-Sent Events as
    chunks of bytes (`app/web/watch.py` has the events), in order. `dropped` is set once the
    reader is too far behind to go on without a gap (even while a send to it is blocked); then
    `farewell()` is the last chunk to try to send. `close()` when the response ends."""

    dropped: asyncio.Event

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def farewell(self) -> bytes: ...

    def close(self) -> None: ...


class LastWriteSource(Protocol):
    """Each POP's latest write and how far it has spread (`coordination.LastWrites`)."""

    def report(self, origin: str, up: list[str]) -> dict | None: ...


# -- the roles --------------------------------------------------------------------------------


class ClusterData(Protocol):
    """Reads and writes at one replica, by id: what the HTTP API's data routes call.

    A read answers what that replica holds (it may lag the others: that is the point); a
    write is answered by that replica alone, once it is durable where there is a disk.
    Values by namespace are what `Replica.read` gives, each type's `value` (see
    `replication.crdts`): a `KvView` for `kv`, an int for `counters`, a list for `sets`, a
    `MapView` for `maps`.

    Errors, all raised before anything changed: UnknownReplica (404) for an id not in
    `ids`; ReplicaDown (503) while that replica is crashed; the library's errors for a bad
    key, value, operation or context token (4xx); on a real replica StorageUnavailable or
    Recovering (503), after which a retry is safe.
    """

    @property
    def ids(self) -> list[str]:
        """The replicas reads and writes may name, in a stable order."""
        ...

    async def aread(self, replica_id: str, ns: str, key: str) -> Any:
        """This replica's value; a key never written reads as its type's empty value (a
        view with no siblings, 0, [], a map with no fields)."""
        ...

    async def abatch(self, replica_id: str, ops: list[BatchOp], render: Callable[[list[Any]], bytes],
                     once: Once | None) -> Answer:
        """Apply checked operations (`replication.batch.check`) in order at this replica with
        nothing in between, durable together where there is a disk; the answer's body is
        `render(results)`, each op's value or the typed error it answered (which changed
        nothing). With `once`, keyed as `awrite_once` (its fingerprint covers the whole batch)."""
        ...

    async def alist(self, replica_id: str, ns: str, prefix: str, cursor: str | None, limit: int) -> Page:
        """A page of the keys of type `ns` this replica holds, in code-point order, after `cursor`
        (see `replication.listing`; InvalidCursor, InvalidLimit, InvalidKey for a bad prefix)."""
        ...

    async def awatch(self, replica_id: str, prefix: str, types: frozenset[str] | None,
                     cursor: str | None) -> ChangeStream:
        """Follow this replica's changes (`replication.changefeed`: every key it applies a change to,
        local or remote) from `cursor` (None: from now), keys starting with `prefix`, of `types`
        (None: all). Raises before streaming: UnknownReplica, ReplicaDown, InvalidCursor."""
        ...

    async def awrite(self, replica_id: str, ns: str, key: str, op: dict) -> Any:
        """Apply `op` (the HTTP body's shape) at this replica; the value after it there."""
        ...

    async def awrite_once(self, replica_id: str, ns: str, key: str, op: dict, once: Once) -> Answer:
        """A keyed write: applied once per (replica, key); a retry gets the first answer's
        bytes (`replayed`), and waits for it while it is in flight. IdempotencyKeyReused for
        the key of another request, IdempotencyTableFull (429) at the bound; a write that
        fails leaves no record."""
        ...


class ClusterObserver(Protocol):
    """What the WebSocket hub reads every frame, `/metrics` at each scrape and the read-only
    admin routes. Every member answers from memory, at once: no I/O, no waiting. The ones
    the hub reads every frame (`has`, `state_of`, `digests`, `clock_info`, `stats`,
    `detail_ident`, `detail`, `now_ms`) never run the simulator either, and are cheap: a
    frame may call several for every replica. The ones that answer a request
    (`replica_states`, `convergence`, `sim_info`) first bring the cluster to the present, as
    `catch_up` does."""

    @property
    def ids(self) -> list[str]: ...

    @property
    def bus(self) -> EventStream: ...

    def has(self, replica_id: str) -> bool: ...

    def state_of(self, replica_id: str) -> ReplicaStatus:
        """KeyError for an id not in `ids` (callers ask `has` first)."""
        ...

    def replica_states(self) -> list[ReplicaState]:
        """Every replica, in `ids` order."""
        ...

    def digests(self) -> dict[str, str]:
        """The digest of each replica that is up, in `ids` order."""
        ...

    def convergence(self) -> Convergence:
        """`derived.convergence` of what it holds now."""
        ...

    def topology(self) -> Topology:
        """`derived.topology`: fixed for the cluster's life."""
        ...

    def partition_groups(self) -> list[list[str]] | None:
        """The partition in force (every replica in exactly one group), or None."""
        ...

    def down(self) -> list[str]:
        """The replicas that are crashed, in `ids` order."""
        ...

    def now_ms(self) -> float:
        """The cluster's time: virtual ms for the simulator, ms since start for processes."""
        ...

    def clock_info(self) -> ClockInfo: ...

    def sim_info(self) -> SimInfo:
        """The simulator's settings (a cluster of processes reports its fixed ones)."""
        ...

    def stats(self) -> TrafficStats: ...

    def detail_ident(self, replica_id: str) -> Hashable:
        """Changes whenever `detail` would: the hub sends a detail again only then."""
        ...

    def detail(self, replica_id: str, recent: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """One replica's keyspace for the side panel (`app/web/detail.py`'s shape), most recently
        touched keys (`recent`, oldest first) at the top. Over processes, from the latest
        copy polled in the background: never fetched while the caller waits."""
        ...

    def catch_up(self) -> None:
        """Bring the cluster to the present before reading: the simulator runs virtual time
        up to now (work in proportion to the events due, done inside the call); a cluster of
        processes is always there."""
        ...


class CoordinationInputs(Protocol):
    """What the coordination panel compares this cluster against (`/api/coordination`)."""

    @property
    def placements(self) -> list[Placement]: ...

    @property
    def model(self) -> LatencyModel: ...

    @property
    def local_writes_timed(self) -> bool:
        """Whether a write's own local cost is measured here (it is not when the write runs
        in another process)."""
        ...

    @property
    def last_writes(self) -> LastWriteSource: ...


class ClusterFaults(Protocol):
    """The faults a presenter injects (`/api/faults/...`, `/api/replicas/{id}/crash|recover`).

    Each takes effect before it returns: the next read sees the cut or the crash, and an
    event (`partition`, `heal`, `crash`; `recover` once the replica is back) goes on the
    bus. They are coroutines so that none holds the event loop: on the simulator they are
    immediate; over processes crash is a SIGKILL whose exit is waited for in a thread,
    recover spawns a process without waiting for it, and partition and heal tell every
    replica at once over loopback HTTP (async), each within a timeout.
    """

    async def partition(self, groups: list[list[str]]) -> list[list[str]]:
        """Drop messages between groups until `heal`; replaces any partition in force. Returns
        the groups in force (`derived.partition_groups`: unlisted replicas form one more
        group). UnknownReplica for an id not in `ids`, ValueError for one listed twice,
        before anything changed."""
        ...

    async def heal(self) -> None: ...

    async def crash(self, replica_id: str, lose_state: bool = False) -> None:
        """Stop a replica: it sends nothing, reads and writes there raise ReplicaDown. With
        `lose_state` it comes back empty, under a new actor. Crashing a crashed replica
        only adds `lose_state`. UnknownReplica for an unknown id."""
        ...

    async def recover(self, replica_id: str) -> None:
        """Bring a crashed replica back (it catches up by anti-entropy); one that is up stays
        as it is. UnknownReplica for an unknown id."""
        ...


class SimulationControls(Protocol):
    """The simulator's own controls (`/api/sim/...`). A cluster of real processes runs on
    real time at one speed: its setters raise NotWithProcesses (409) and change nothing,
    and it reports speed 1 and never paused. Setters take effect before they return."""

    @property
    def speed(self) -> float:
        """Virtual time per wall time."""
        ...

    @property
    def paused(self) -> bool: ...

    def target(self) -> float:
        """The cluster time that corresponds to now (where `catch_up` brings it)."""
        ...

    def set_strategy(self, name: str) -> None:
        """Switch dissemination at every replica; ValueError for an unknown strategy."""
        ...

    def set_speed(self, speed: float) -> None:
        """ValueError outside (0, MAX_SPEED]."""
        ...

    def set_loss(self, p: float) -> None:
        """The probability that a message is lost; ValueError outside [0, 1]."""
        ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def step(self, ms: float) -> None:
        """Run virtual time `ms` forward, inside the call (the caller bounds `ms`: the admin
        API allows a virtual minute). ValueError unless a positive finite number."""
        ...

    async def reset(self) -> None:
        """Start afresh with the same replicas (`POST /api/reset`): every key, partition, crash
        and idempotency record gone, strategy, loss and speed back to the values the cluster
        started with, running, virtual time from zero. Whoever drives the cluster (a scenario)
        is stopped by the caller first. Real processes raise NotWithProcesses: wiping their
        durable data under running replicas is not a control this contract offers."""
        ...


class ClusterLifecycle(Protocol):
    """What the app's lifespan calls: `start` before serving, `pump` as a task while serving
    (when the app runs the clock), `close` at shutdown."""

    async def start(self) -> None:
        """Get ready to serve (processes: spawn them and wait until each answers)."""
        ...

    async def pump(self) -> None:
        """Run until cancelled: the simulator advances virtual time with the wall clock here."""
        ...

    async def close(self) -> None: ...


class DashboardCluster(ClusterData, ClusterObserver, CoordinationInputs, ClusterFaults, SimulationControls,
                       ClusterLifecycle, Protocol):
    """Every role: what the dashboard app (`create_app`) drives."""


__all__ = [
    "ChangeStream",
    "ClockInfo",
    "ClusterData",
    "ClusterFaults",
    "ClusterLifecycle",
    "ClusterObserver",
    "Convergence",
    "CoordinationInputs",
    "DashboardCluster",
    "EventStream",
    "LastWriteSource",
    "ReplicaState",
    "ReplicaStatus",
    "SimInfo",
    "SimulationControls",
    "Topology",
    "TopologyReplica",
    "TrafficStats",
]
