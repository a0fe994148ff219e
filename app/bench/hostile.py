"""`edgestate bench hostile`: a campaign of hostile inputs against fresh servers and replicas.

- `--peer-port` (`peer_floods`): 16 MiB length prefixes, idle connections and a slowloris
  against a real `edgestate replica`'s peer port, with TLS and with the secret only;
- `--http` (`http_floods`): the event-loop stall of the biggest valid writes, and hostile
  HTTP requests (bad keys, duplicate members, bad methods and lengths, oversized bodies);
- `--rate-limit` (`rate_floods`): concurrent writes claiming other clients' addresses;
- `--ws` (`ws_floods`): big frames, a deflate bomb, clients that never read.

No flag: all of them. The summary holds the issue's targets, and the exit status is 1 when one
is missed: peak RSS growth under the peer-port and /ws floods under 50 MB, 0 rate-limit
bypasses, 0 answers 5xx (and every attacked process alive, the replica still replicating and
closing idle and slow peer connections),
the longest stall from a single valid request under 50 ms. `--short` is the small form CI runs:
there the stall is reported beside the load average but does not fail (a busy CI machine's
garbage collections and neighbours show in it).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from replication.bench.report import finish
from replication.cliargs import positive, positive_int

from . import http_floods, peer_floods, rate_floods, ws_floods

RSS_TARGET_MB = 50.0
STALL_TARGET_MS = 50.0
ATTACKS = ("peer_port", "http", "rate_limit", "ws")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    d = ws_floods.FloodParams()
    p.add_argument("--peer-port", action="store_true",
                   help="floods of a replica's peer port: 16 MiB prefixes, idle connections, a slowloris")
    p.add_argument("--http", action="store_true", help="the stall of the biggest valid writes, and hostile requests")
    p.add_argument("--rate-limit", action="store_true", help="writes claiming other clients' addresses (--audience)")
    p.add_argument("--ws", action="store_true", help="the /ws floods")
    p.add_argument("--short", action="store_true",
                   help=f"a small campaign for CI: {peer_floods.SHORT['big_clients']} big prefixes, "
                        f"{peer_floods.SHORT['idle_clients']} idle peer connections, the stall on "
                        f"{http_floods.SHORT['pops']}, {ws_floods.SHORT['frame_clients']} clients per frame/bomb "
                        f"flood, {ws_floods.SHORT['idle_clients']} never-reading ones; the stall does not fail it")
    p.add_argument("--stall-pops", default=None, metavar="POPS",
                   help=f"the replicas of the stall round (default: {http_floods.HttpParams.pops}; "
                        f"--short: {http_floods.SHORT['pops']})")
    p.add_argument("--frame-clients", type=positive_int, default=None, metavar="N",
                   help=f"clients sending big frames (default: {d.frame_clients})")
    p.add_argument("--frames", type=positive_int, default=None, metavar="K", help=f"frames each (default: {d.frames})")
    p.add_argument("--frame-mib", type=positive, default=None, metavar="M",
                   help=f"size of each frame in MiB (default: {d.frame_bytes // ws_floods.MiB})")
    p.add_argument("--bomb-clients", type=positive_int, default=None, metavar="N",
                   help=f"clients sending deflate bombs (default: {d.bomb_clients})")
    p.add_argument("--idle-clients", type=positive_int, default=None, metavar="N",
                   help=f"clients that never read (default: {d.idle_clients})")
    p.add_argument("--phases", default=",".join(d.phases), metavar="LIST",
                   help="which floods, in order: frames,bomb,idle (default: %(default)s)")
    p.add_argument("--url", default=None, metavar="http://HOST:PORT", help=argparse.SUPPRESS)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def add_parser(which) -> argparse.ArgumentParser:
    """Add `hostile` to the subparsers of `edgestate bench`."""
    p = which.add_parser("hostile", help="hostile-input campaign: peer port, HTTP, rate limit, /ws (exit 1 on a miss)",
                         description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgestate bench hostile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return p


def params(args: argparse.Namespace) -> ws_floods.FloodParams:
    p = ws_floods.FloodParams()
    if args.short:
        p = replace(p, **ws_floods.SHORT)
    given = {"frame_clients": args.frame_clients, "frames": args.frames, "bomb_clients": args.bomb_clients,
             "idle_clients": args.idle_clients,
             "frame_bytes": int(args.frame_mib * ws_floods.MiB) if args.frame_mib else None}
    p = replace(p, **{k: v for k, v in given.items() if v is not None})
    phases = tuple(x for x in args.phases.split(",") if x)
    unknown = set(phases) - {"frames", "bomb", "idle"}
    if unknown:
        raise ValueError(f"unknown phase(s): {', '.join(sorted(unknown))}")
    return replace(p, phases=phases, url=args.url)


def chosen(args: argparse.Namespace) -> tuple[str, ...]:
    picked = tuple(a for a in ATTACKS if getattr(args, a))
    return picked or ATTACKS


def summarize(r: dict, short: bool) -> dict:
    """The issue's targets over whatever ran; `misses` says which were missed (and fail the run)."""
    s: dict = {"misses": [], "reported_only": []}
    rss = []
    if "peer_port" in r:
        rss.append(("peer port", peer_floods.worst_rss(r["peer_port"])))
        for mode, m in r["peer_port"].items():
            if not m["replica_alive"]:
                s["misses"].append(f"peer port ({mode}): the replica died")
            if not m["replicated_after"]:
                s["misses"].append(f"peer port ({mode}): the replica no longer replicates")
            for phase in ("idle", "slow"):  # the issue: time out idle and slow connections
                if m.get(phase, {}).get("still_open"):
                    s["misses"].append(f"peer port ({mode}): {m[phase]['still_open']} {phase} connections never closed")
    if "ws" in r:
        w = r["ws"]
        rss.append(("/ws", max((w[ph]["peak_rss_growth_mb"] for ph in ("frames", "bomb", "idle") if ph in w),
                               default=0.0)))
        if not w.get("server_alive"):
            s["misses"].append("/ws: the server died")
    for what, mb in rss:
        s[f"peak_rss_growth_mb ({what})"] = mb
        if mb >= RSS_TARGET_MB:
            s["misses"].append(f"{what}: peak RSS growth {mb} MB (target: under {RSS_TARGET_MB:g} MB)")
    five = 0
    if "http" in r:
        h = r["http"]
        st = h["stall"]
        s["longest_stall_ms"], s["load_average_1m"] = st["longest_stall_ms"], st["load_average_1m"]
        if st["longest_stall_ms"] >= STALL_TARGET_MS:
            msg = (f"longest stall {st['longest_stall_ms']} ms from {st['longest_stall_write']} (target: under "
                   f"{STALL_TARGET_MS:g} ms; load average {st['load_average_1m']}, longest GC {st['worst_gc_ms']} ms)")
            (s["reported_only"] if short else s["misses"]).append(msg)
        five += h["hostile"]["five_xx"] + sum(1 for x in st["statuses"] if x >= 500)
        hf = h["hostile"].get("header_flood")
        if hf:  # the head is bounded (web.http_head): each is refused 431, and memory stays flat
            s["peak_rss_growth_mb (HTTP headers)"] = hf["peak_rss_growth_mb"]
            if hf["peak_rss_growth_mb"] >= RSS_TARGET_MB:
                s["misses"].append(f"HTTP header flood: peak RSS growth {hf['peak_rss_growth_mb']} MB "
                                   f"(target: under {RSS_TARGET_MB:g} MB)")
            if set(hf["statuses"]) != {"431"}:
                s["misses"].append(f"HTTP header flood: answered {hf['statuses']}, not 431 each")
        if not h["hostile"]["server_alive"]:
            s["misses"].append("http: the server died")
    if "rate_limit" in r:
        s["rate_limit_bypasses"] = r["rate_limit"]["bypasses"]
        five += r["rate_limit"]["five_xx"]
        if r["rate_limit"]["bypasses"]:
            s["misses"].append(f"rate limit: {r['rate_limit']['bypasses']} bypasses (target: 0)")
    if "http" in r or "rate_limit" in r:
        s["five_xx"] = five
        if five:
            s["misses"].append(f"{five} answers 5xx (target: 0)")
    return s


def measure(args: argparse.Namespace, progress) -> dict:
    r: dict = {"short": bool(args.short)}
    attacks = chosen(args)
    if "peer_port" in attacks:
        pp = peer_floods.PeerParams()
        r["peer_port"] = peer_floods.measure(replace(pp, **peer_floods.SHORT) if args.short else pp, progress)
    if "http" in attacks:
        hp = replace(http_floods.HttpParams(), **(http_floods.SHORT if args.short else {}))
        if args.stall_pops:
            hp = replace(hp, pops=args.stall_pops)
        r["http"] = http_floods.measure(hp, progress)
    if "rate_limit" in attacks:
        r["rate_limit"] = rate_floods.measure(rate_floods.RateParams(), progress)
    if "ws" in attacks:
        r["ws"] = ws_floods.measure(params(args), progress)
    r["summary"] = summarize(r, args.short)
    return r


def report(r: dict) -> str:
    parts = []
    if "peer_port" in r:
        parts.append(peer_floods.report(r["peer_port"]))
    if "http" in r:
        parts.append(http_floods.report(r["http"]))
    if "rate_limit" in r:
        parts.append(rate_floods.report(r["rate_limit"]))
    if "ws" in r:
        parts.append(ws_floods.report(r["ws"]))
    s = r["summary"]
    figures = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("misses", "reported_only"))
    parts.append(f"summary        {figures}")
    parts += [f"MISSED         {m}" for m in s["misses"]]
    parts += [f"reported       {m} (not failing)" for m in s["reported_only"]]
    if not s["misses"]:
        parts.append("summary        every target met" + (" (but see above)" if s["reported_only"] else ""))
    return "\n".join(parts)


def run(args: argparse.Namespace) -> int:
    try:
        params(args)
    except ValueError as e:
        print(f"edgestate bench hostile: error: --phases: {e}", file=sys.stderr)
        return 2
    progress = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    out: dict = {}

    def go() -> dict:
        out.update(measure(args, progress))
        return out

    code = finish("hostile", go, report, args.json)
    return code or (1 if out["summary"]["misses"] else 0)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
