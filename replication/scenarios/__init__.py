"""Named, scripted scenarios: plain-data files of steps that end by checking their own claim.

A scenario file is YAML (JSON is YAML too)::

    name: hello-world                 # required: how it is run (`edgestate scenario run hello-world`)
    title: Hello, world               # optional: shown on the page
    description: One write spreads.   # optional
    claim: every POP reads the greeting within 500 ms    # required: what the checks prove
    pops: default                     # optional: all, default, "lhr,iad,syd" or a list (the CLI's --pops wins)
    steps:                            # required: run in order, on virtual time
      - say: London writes "hello, world".
      - write: {at: lhr, kv: "greeting-{run}", value: "hello, world"}
      - settle: {within_ms: 2000, as: spread}
      - expect: {kv: "greeting-{run}", values: ["hello, world"]}
      - expect: {figure: spread.ms, max: 500}

Each step is a mapping with one key, the step's name; a step without arguments may be just
its name (`- heal`), and one with a single main argument may give it directly (`- wait: 300`,
`- crash: iad`, `- partition: atlantic`, `- settle: 3000`). Every step may add a `caption`.

- `say: TEXT` — a caption for the audience; the page keeps it on screen until the next `say`
  (each for at least 2 s). `say: {text: TEXT, wait: presenter [, max_wait_s: S]}`: a live run
  stops there until the presenter's → (the page's right-arrow key, or
  `POST /api/scenarios/runs/{run}/next`), for at most S wall seconds (default 120, at most
  1800), then goes on by itself and says so; Stop (`DELETE .../runs/{run}`) ends it at once.
  A fast run (`edgestate scenario run`) never waits.
- `write: {at: ID, kv: KEY, value: V [, context_from: READ]}`, `{at, kv, delete: true}`,
  `{at, counter: KEY, add: N}`, `{at, set: KEY, add: [..]}` or `{.., remove: [..]}`.
  `context_from` names an earlier `read`: the write supersedes exactly what that read saw.
- `read: {at: ID, kv|counter|set: KEY, as: NAME}` — keeps the result (and its context) as NAME.
- `partition: CUT` (`atlantic`, `pacific`, `americas`), `{region: Europe}` (that region against
  the rest) or `{groups: [[ID, ..], [ID, ..]]}` (unlisted replicas form one more group).
- `heal`; `crash: ID` or `{at: ID, lose_state: true}`; `recover: ID`. These change the map:
  each comes at least 500 virtual ms after the previous one, so every state is seen (engine.py).
- `wait: MS` — virtual milliseconds.
- `settle: {within_ms: MS, as: NAME}` — wait until every POP that is up holds the same state;
  measures `NAME.ms` and `NAME.converged`. It first lets any running `load` finish.
- `load: {writes: N, counter: KEY, rate_per_s: R [, add: 1, at: all|ID|[IDs], as: NAME]}` —
  N increments from POPs picked at random (seeded), R per virtual second, in the background
  while the next steps run. A write whose POP is down goes to the nearest POP that is up, as a
  client's request would. Measures `NAME.acknowledged`, `NAME.redirected`, `NAME.added`.
- `expect:` — a check; the scenario passes when every check passes:
  `{converged: true|false}`, `{kv: KEY [, at: ..], values: [..], siblings: N}`,
  `{counter: KEY [, at: ..], value: N}`, `{set: KEY [, at: ..], members: [..]}` (`at` defaults
  to every POP that is up), `{figure: NAME.FIELD, min: X, max: Y, equals: V}`; `label` words it.
- `consensus: {writer: ID, as: NAME [, leader: ID]}` — the same write through a global leader
  (replication/baseline/consensus.py: majority commit, same POPs and latency model, in a side
  simulation): `NAME.commit_ms`, `NAME.rtt_to_leader_ms`, `NAME.local_ack_ms` (0: a CRDT write is
  answered where it lands). The leader defaults to the most central POP.
- `availability: {as: NAME [, deadline_ms: 2000, leader: ID]}` — under the partition in force,
  every POP that is up writes: for real with CRDTs, and on the coordinated baseline with the
  same cut. `NAME.crdt_share`, `NAME.consensus_share`, `NAME.crdt_writers`, `NAME.consensus_writers`.

The first counter or set a step names is what the scenario is about: its value at every POP
(a counter's value, a set's size) rides on every event as `tally`, and on the page as a big
running total on the map.

`{run}` in a key becomes the run's number, so a scenario run twice on the dashboard starts from
fresh keys. A malformed file is refused before anything runs, with `file:line: what is wrong`.

Modules: `spec` (parsing and checking), `cuts` (named partitions), `engine` (the steps),
`drivers` (fast on a fresh simulator; live, paced on the dashboard's cluster), `builtin/` (the
shipped scenarios).
"""

from .drivers import run_fast, run_live
from .engine import Engine
from .spec import Catalogue, Scenario, ScenarioError, builtin_names, load_builtin, load_file, parse

__all__ = [
    "Catalogue",
    "Engine",
    "Scenario",
    "ScenarioError",
    "builtin_names",
    "load_builtin",
    "load_file",
    "parse",
    "run_fast",
    "run_live",
]
