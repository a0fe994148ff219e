"""Typed answers of a replica process's own routes (`/api/replicas`, `/api/status`,
`/api/detail`), so its OpenAPI schema tells a generated client what comes back.

Models allow members beyond those listed: a newer replica may say more, and an older client
still parses it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from replication.crdts import BY_NAMESPACE


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ReplicaSummary(_Open):
    id: str
    status: Literal["up"] = Field(description="a replica process that answers is up")
    version_vector: dict[str, int] = Field(description="per actor, the highest write this replica has applied")
    digest: str = Field(description="hex digest of the replica's state: equal digests, equal state")


class ReplicaSummaries(_Open):
    replicas: list[ReplicaSummary] = Field(description="this replica only (the dashboard lists every one)")


class LinkOut(_Open):
    connected: bool
    queued: int
    queued_bytes: int
    sender_alive: bool


class TransportOut(_Open):
    frames_in: int
    frames_out: int
    connects: int
    connect_failures: int
    dropped_out: dict[str, int]
    refused: dict[str, int]
    encrypted: bool
    links: dict[str, LinkOut]


class StatusOut(_Open):
    """What an operator asks a replica process: who it is, its durability, its peers and links."""

    id: str
    actor: str = Field(description="the actor id its writes carry (`id~N` after coming back empty)")
    boots: int
    restarted_unclean: bool
    rejoined_as: str | None
    joined: bool = Field(description="it has heard from its peers which actors of its id they hold")
    recovering: bool
    damage: list[str]
    recovered: dict[str, Any] | None = Field(description="how the last repair ended (reason, seconds, ...)")
    version_vector: dict[str, int]
    digest: str
    keys: int
    peers: dict[str, Literal["alive", "suspect", "dead"]] = Field(description="SWIM membership status by peer")
    durable_seq: int
    pending: int
    waiting_inbound: int
    held_outbound: int
    rollbacks: int
    idempotency_records: int
    bad_frames: dict[str, int]
    partitioned_from: list[str]
    transport: TransportOut


DetailOut = create_model(
    "DetailOut",
    __base__=_Open,
    __doc__="The replica's keyspace as the dashboard lists it: the most recently touched keys first.",
    status=(Literal["up", "down"], ...),
    digest=(str, ...),
    version_vector=(dict[str, int], ...),
    keys=(int, Field(description="keys held")),
    truncated=(int, Field(description="keys held but not listed")),
    **{ns: (list[dict[str, Any]], Field(description=f"{t.LABEL} keys: the key and its value's summary"))
       for ns, t in BY_NAMESPACE.items()},
)
