"""The concrete behaviours the talk relies on, through the sans-IO replica."""

from replication import Replica


def trio():
    ids = ["lhr", "syd", "jfk"]
    return [Replica(i, members=ids) for i in ids]


def everywhere(delta, replicas):
    for r in replicas:
        r.apply(delta, now=0)


def test_two_concurrent_writes_keep_two_siblings_everywhere():
    lhr, syd, jfk = trio()
    _, d1 = lhr.write_kv("colour", "red", now=1)
    _, d2 = syd.write_kv("colour", "blue", now=1)
    for d in (d1, d2):
        everywhere(d, [lhr, syd, jfk])
    for r in (lhr, syd, jfk):
        assert r.read_kv("colour").values == ["red", "blue"]  # ordered by dot: lhr before syd
    assert lhr.digest() == syd.digest() == jfk.digest()


def test_a_write_that_read_both_siblings_replaces_them_everywhere():
    lhr, syd, jfk = trio()
    _, d1 = lhr.write_kv("colour", "red", now=1)
    _, d2 = syd.write_kv("colour", "blue", now=1)
    for d in (d1, d2):
        jfk.apply(d)
    seen = jfk.read_kv("colour")
    assert len(seen.siblings) == 2
    _, d3 = jfk.write_kv("colour", "purple", seen.context, now=2)
    # lhr and syd get the resolving write before each other's sibling: still resolved
    everywhere(d3, [lhr, syd])
    lhr.apply(d2)
    syd.apply(d1)
    for r in (lhr, syd, jfk):
        assert r.read_kv("colour").values == ["purple"]
    assert lhr.digest() == syd.digest() == jfk.digest()


def test_a_write_without_context_supersedes_only_what_this_replica_holds():
    lhr, syd, _ = trio()
    _, d1 = lhr.write_kv("k", 1, now=1)
    _, d2 = syd.write_kv("k", 2, now=1)
    lhr.write_kv("k", 3, now=2)  # lhr has not seen syd's write: it survives as a sibling
    lhr.apply(d2)
    assert lhr.read_kv("k").values == [3, 2]


def test_increments_at_three_replicas_sum():
    reps = trio()
    deltas = [r.add_counter("votes", n, now=1)[1] for r, n in zip(reps, (5, 7, -2))]
    deltas.append(reps[0].add_counter("votes", 3, now=2)[1])
    for d in deltas:
        everywhere(d, reps)
    assert [r.read_counter("votes") for r in reps] == [13, 13, 13]


def test_concurrent_add_and_remove_keeps_the_element():
    lhr, syd, jfk = trio()
    _, add1 = lhr.add_to_set("s", ["x"], now=1)
    everywhere(add1, [syd, jfk])
    _, rm = syd.remove_from_set("s", ["x"], now=2)  # saw add1 only
    _, add2 = jfk.add_to_set("s", ["x"], now=2)  # concurrent re-add
    for d in (rm, add2):
        everywhere(d, [lhr, syd, jfk])
    assert [r.read_set("s") for r in (lhr, syd, jfk)] == [["x"]] * 3


def test_a_remove_that_observed_the_add_removes_it():
    lhr, syd, jfk = trio()
    _, add = lhr.add_to_set("s", ["x", "y"], now=1)
    syd.apply(add)
    _, rm = syd.remove_from_set("s", ["x"], now=2)
    jfk.apply(rm)  # the remove arrives before the add it removes
    jfk.apply(add)
    lhr.apply(rm)
    assert [r.read_set("s") for r in (lhr, syd, jfk)] == [["y"]] * 3


def test_delete_removes_what_the_context_saw_and_no_more():
    lhr, syd, _ = trio()
    _, d1 = lhr.write_kv("k", "a", now=1)
    syd.apply(d1)
    ctx = syd.read_kv("k").context
    _, d2 = lhr.write_kv("k", "b", now=2)  # after syd's read
    syd.apply(d2)
    _, rm = syd.delete_kv("k", ctx, now=3)
    lhr.apply(rm)
    assert lhr.read_kv("k").values == syd.read_kv("k").values == ["b"]


def test_noop_writes_produce_no_delta_and_no_dot():
    r = Replica("lhr")
    assert r.delete_kv("missing", now=1)[1] is None
    assert r.add_counter("c", 0, now=1)[1] is None
    assert r.remove_from_set("s", ["nothing"], now=1)[1] is None
    assert r.add_to_set("s", [], now=1)[1] is None
    assert r.version_vector.to_dict() == {}


def test_replica_takes_time_from_its_caller():
    r = Replica("lhr")
    r.write_kv("k", 1, now=5_000)
    r.write_kv("k", 2, now=5_000)
    [s] = r.read_kv("k").siblings
    assert (s.wall_ms, s.logical) == (5_000, 1)


def test_writes_return_the_view_after_the_write():
    r = Replica("lhr")
    view, _ = r.write_kv("k", "v", now=1)
    assert view.values == ["v"] and view.context is not None
    assert r.add_counter("c", 4, now=1)[0] == 4
    assert r.add_to_set("s", ["b", "a"], now=1)[0] == ["a", "b"]
    assert r.remove_from_set("s", ["a"], now=1)[0] == ["b"]
    assert r.delete_kv("k", view.context, now=2)[0].values == []
