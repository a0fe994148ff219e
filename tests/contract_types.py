"""Checked by mypy (tests/test_contract_types.py), not run: each implementation plays the
roles of the cluster contract it claims. A member missing or of the wrong type in one of
them is a type error here."""

from __future__ import annotations

from app.web.events import EventBus
from app.dashboard.simulated import LiveCluster
from app.processes.cluster import ProcessLive
from app.attach.cluster import AttachedLive
from app.replica.service import ReplicaService
from replication.contract import ClusterData, DashboardCluster, EventStream


def simulated(live: LiveCluster) -> DashboardCluster:
    return live


def processes(live: ProcessLive) -> DashboardCluster:
    return live


def attached(live: AttachedLive) -> DashboardCluster:
    return live


def one_replica(service: ReplicaService) -> ClusterData:
    return service


def events(bus: EventBus) -> EventStream:
    return bus
