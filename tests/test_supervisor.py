"""The process supervisor's ports: chosen where outgoing connections never land, and re-chosen
when another program takes one before the replica binds it (a CI run failed on exactly that)."""
from __future__ import annotations

import socket

from app.processes.supervisor import ProcessCluster, _ephemeral_range, free_port


def test_free_ports_are_distinct_and_outside_the_ephemeral_range():
    lo, hi = _ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(not lo <= p <= hi for p in ports), (lo, hi, ports)


def test_a_cluster_whose_port_was_taken_before_it_started_picks_new_ports(tmp_path):
    with ProcessCluster(["lhr", "fra"], tmp_path, inject_latency=False) as c:
        taken = c.replicas["fra"].http_port
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", taken))
            squatter.listen()
            c.start()
            assert c.replicas["fra"].http_port != taken
            assert all(c.healthy(rid) for rid in c.ids)
        assert "address already in use" in c.output("fra")
