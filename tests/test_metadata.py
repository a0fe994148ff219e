"""Causal metadata is O(replicas) per replica plus O(siblings) per key: never a vector per key."""

import msgpack

from replication import Replica


def observe_writes(n_writers: int, n_keys: int = 10_000):
    ids = [f"r{i:02d}" for i in range(n_writers)]
    writers = [Replica(i, members=ids + ["obs"]) for i in ids]
    obs = Replica("obs", members=ids + ["obs"])
    for k in range(n_keys):
        w = writers[k % n_writers]
        obs.apply(w.write_kv(f"key{k}", k, now=k)[1])
    for w in writers:  # anti-entropy tells the observer what every member holds
        w.apply(obs.deltas_since(w.applied_context))
        obs.observe_peer(w.id, w.applied_context)
    return obs, ids


def per_key_bytes(r: Replica):
    sizes = [r.store.key_metadata_bytes(ns, key) for ns, key in r.store.keys()]
    return sum(sizes) / len(sizes), max(sizes)


def test_ten_thousand_keys_at_fifty_replicas_carry_no_per_key_vector():
    obs, ids = observe_writes(50)
    mean50, max50 = per_key_bytes(obs)
    # each key stores exactly the dots of its live values: one dot, one value
    for ns, key in obs.store.keys():
        store = obs.store.get(ns, key)
        assert len(store) == 1
    # a 50-entry vector per key would need 50 * (3-byte id + counter) > 200 bytes; one dot is ~10
    assert max50 <= 16
    # the replica-wide metadata is one vector: 50 writers, no gaps; the dot->key map is gone
    assert len(obs.version_vector) == 50 and obs.store.applied.cloud == set()
    assert obs.store.key_of == {}
    ctx_bytes = len(msgpack.packb(obs.store.ctx.to_wire()))
    assert ctx_bytes < 50 * 16
    # and the per-key cost does not grow with the number of replicas
    obs2, _ = observe_writes(2)
    mean2, _ = per_key_bytes(obs2)
    assert mean50 <= mean2 + 2  # counters grow by at most a couple of varint bytes
