"""The scrub's budget counts work, not keys (`Store.scrub`): no call checks more seals than its
budget whatever a key's size, a key too big for one call is scanned a slice per call, and the
scan still finds what changed behind the store's back anywhere in the key (its middle, its end),
in a bounded number of calls, while writes through the store land mid-scan without a false finding.

Work is counted, not timed: each seal check goes through `seals.verifies`, which these tests count."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from histories import do
from histories import ops as any_op
from replication import Replica, seals
from replication import store as store_mod
from replication.crdts import orset
from replication.bounds import MAX_SET_MEMBERS, MAX_SET_REQUEST_MEMBERS

BUDGET = 64


def big_set(n: int = MAX_SET_MEMBERS) -> Replica:
    r = Replica("lhr")
    for i in range(0, n, MAX_SET_REQUEST_MEMBERS):
        r.add_to_set("big", list(range(i, min(i + MAX_SET_REQUEST_MEMBERS, n))), now=1 + i)
    r.add_to_set("small", [1, 2], now=10**6)
    return r


@pytest.fixture
def checks(monkeypatch):
    """How many seals each scrub call checks: calls[-1] is the last call's count."""
    calls: list[int] = []
    real = seals.verifies

    def counting(*a):
        calls[-1] += 1
        return real(*a)

    monkeypatch.setattr(seals, "verifies", counting)
    return calls


def scrub(r: Replica, calls: list[int]) -> int:
    calls.append(0)
    return r.store.scrub(BUDGET)


def calls_to_sweep(r: Replica) -> int:
    """Calls a sweep of this store takes at BUDGET: a key costs one, each entry one, each dot one."""
    s = r.store
    work = sum(1 + len(st_) + sum(1 for _ in store_mod.BY_NAMESPACE[ns].dots(st_))
               for ns, m in s.data.items() for st_ in m.values())
    return math.ceil(work / BUDGET) + 2


def test_no_scrub_call_checks_more_seals_than_its_budget_and_a_sweep_covers_the_big_key(checks):
    r = big_set()
    for _ in range(calls_to_sweep(r)):
        scrub(r, checks)
    assert max(checks) <= BUDGET, f"one scrub call checked {max(checks)} seals against a budget of {BUDGET}"
    assert sum(checks) >= MAX_SET_MEMBERS, f"a sweep checked only {sum(checks)} seals of a {MAX_SET_MEMBERS:,}-member key"
    assert r.store.integrity.silent_changes == 0


@pytest.mark.parametrize("where", ["middle", "end"])
def test_a_damaged_member_deep_in_a_big_set_is_found_within_a_sweep(checks, where):
    r = big_set()
    for _ in range(3):  # the cursor is inside the big key, or past it: either way a sweep reaches it
        scrub(r, checks)
    s = r.store.data["sets"]["big"]
    if where == "middle":  # a member's seal flipped where it sits: it no longer verifies its content
        [d] = orset.dots_of(s[b"5000"])
        r.store.seals[d] = bytes(x ^ 0xFF for x in r.store.seals[d])
    else:  # the last member's element changed, its dots kept: its seal no longer verifies
        s[b'"evil"'] = s.pop(next(reversed(s)))
    limit = 2 * calls_to_sweep(r)
    for n in range(limit):
        scrub(r, checks)
        if r.store.integrity.bad_seals:
            break
    assert r.store.integrity.bad_seals == 1, f"the damaged member was not found in {limit} scrub calls"
    assert len(r.store.data["sets"]["big"]) == MAX_SET_MEMBERS - 1, "the damaged member was not dropped"
    # finding it may check the whole key once (the damage path); every other call stays in budget
    assert sorted(checks)[-2] <= BUDGET


def test_a_member_gone_behind_the_stores_back_is_found_while_writes_land_mid_scan(checks):
    r = big_set()
    scrub(r, checks)
    scrub(r, checks)
    assert r.store._scan is not None and r.store._scan.ref == ("sets", "big"), "the scrub is inside the big key"
    s = r.store.data["sets"]["big"]
    seen = next(iter(r.store._scan.seen))
    del s[b"7000"]  # behind the store's back: its dot and seal stay; only the key's hash can tell
    for n in range(2 * calls_to_sweep(r)):
        if n % 5 == 0:  # writes through the store: removing seen and unseen members, adding new ones
            r.remove_from_set("big", [int(seen), 9000 - n], now=10**7 + n)
            r.add_to_set("big", [-n - 1], now=10**7 + n)
        scrub(r, checks)
        if r.store.integrity.silent_changes:
            break
    assert r.store.integrity.silent_changes == 1, "a member gone behind the store's back was not found"
    assert [f["key"] for f in r.store.findings if f["what"] == "silent_change"] == ["big"]


def test_writes_landing_mid_scan_cause_no_false_finding(checks):
    r = big_set(2_000)
    for n in range(3 * calls_to_sweep(r)):
        if n % 3 == 0:  # adds, removals of members the scan has and has not summed, re-adds
            r.remove_from_set("big", [n % 2_000, (7 * n) % 2_000], now=10**7 + n)
            r.add_to_set("big", [n % 2_000, -n], now=10**7 + n)
        scrub(r, checks)
    assert r.store.integrity.silent_changes == 0 and r.store.integrity.bad_seals == 0
    assert r.store.integrity.scrubbed >= 3 * 2, "the big key was scanned to its end more than once"


IDS = ["a", "b"]
histories = st.lists(st.one_of(
    st.tuples(st.just("op"), st.sampled_from(IDS), any_op(["k0", "k1"])),
    st.tuples(st.just("sync"), st.sampled_from(IDS)),
    st.tuples(st.just("scrub"), st.integers(1, 4)),
), max_size=80)


@settings(max_examples=150, deadline=None)
@given(histories)
def test_a_tiny_budget_scans_every_key_in_slices_and_never_reports_a_change_the_store_made(history):
    """Budgets of 1-4 put nearly every key in a slice-by-slice scan; writes and anti-entropy joins
    between slices must keep the scan's sum right (no silent change is ever reported)."""
    reps = {i: Replica(i, members=IDS) for i in IDS}
    for n, ev in enumerate(history):
        if ev[0] == "op":
            do(reps[ev[1]], ev[2], n)
        elif ev[0] == "sync":
            other = reps["b" if ev[1] == "a" else "a"]
            reply = other.deltas_since(reps[ev[1]].applied_context)
            if reply is not None:
                reps[ev[1]].apply(reply)
        else:
            for x in reps.values():
                x.store.scrub(ev[1])
    for x in reps.values():
        for _ in range(200):
            x.store.scrub(1)
        assert x.store.integrity.silent_changes == 0, list(x.store.findings)
