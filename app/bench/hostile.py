"""`edgestate bench hostile`: a campaign of hostile inputs against a fresh server.

`--ws`: the `/ws` floods (`ws_floods`): big frames, a deflate bomb, clients that never read;
each reports the server's peak RSS growth, the close codes the clients saw and whether a
normal client kept its stream. `--short` is the small form a test runs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from replication.bench.report import finish
from replication.cliargs import positive, positive_int

from . import ws_floods


def _add_arguments(p: argparse.ArgumentParser) -> None:
    d = ws_floods.FloodParams()
    p.add_argument("--ws", action="store_true", help="the /ws floods (the only campaign so far; the default)")
    p.add_argument("--short", action="store_true",
                   help=f"a small campaign for CI: {ws_floods.SHORT['frame_clients']} clients per frame/bomb flood, "
                        f"{ws_floods.SHORT['idle_clients']} never-reading ones")
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
    p = which.add_parser("hostile", help="hostile-input campaign against a fresh server (--ws: the /ws floods)",
                         description=__doc__ + "\n" + ws_floods.__doc__,
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


def run(args: argparse.Namespace) -> int:
    try:
        p = params(args)
    except ValueError as e:
        print(f"edgestate bench hostile: error: --phases: {e}", file=sys.stderr)
        return 2
    progress = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    return finish("hostile", lambda: ws_floods.measure(p, progress), ws_floods.report, args.json)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
