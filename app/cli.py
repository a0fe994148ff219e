"""The `edgestate` command line.

    edgestate serve [--host 127.0.0.1] [--port 8000] [--pops all|default|ID,ID,...] [--scenario FILE ...]
                    [--strategy plumtree|gossip|direct] [--speed X] [--seed N]
                    [--token T] [--admin-token A] [--private] [--audience [--write-rate R] [--write-burst B]]
                    [--public-url URL]
                    [--forwarded-allow-ips IP,NET,...] [--tls-cert FILE --tls-key FILE]
    edgestate bench propagation [--pops ...] [--replicas N] [--writes K] [--loss P] [--strategy LIST] [--json FILE]
    edgestate bench ws [--clients N] [--json FILE]
    edgestate bench hostile [--peer-port] [--http] [--rate-limit] [--ws] [--short] [--json FILE]
                                          the hostile-input campaign (all of it by default); exit 1 on a missed target
    edgestate bench coordination [--pops ...] [--leader ID] [--partition americas|europe|asia-pacific] [--json FILE]

    edgestate serve --processes [--data-dir DIR] ...   the same dashboard over real replica processes
    edgestate serve --attach ID=URL ... | --attach-file FILE [--attach-token T] [--attach-admin-token A]
                    [--attach-ca FILE] ...             the same dashboard over replicas running elsewhere
    edgestate replica --id ID --listen H:P [--http H:P [--tls-cert F --tls-key F]] --peer ID=H:P ...
                      --data-dir D --secret-file F
    edgestate certs init --dir D | issue --dir D --id ID [--host NAME ...] [--days N] [--force]
                                                        CA and replica (and HTTPS) certificates
    edgestate bench replica [--writes N] [--clients C] [--json FILE]
    edgestate bench writes [--pops ...] [--big N] [--json FILE]
    edgestate bench page [--writes R] [--duration S] [--baseline REV] [--shots DIR] [--json FILE]
    edgestate bench live [--pops ...] [--speed X] [--writes R] [--clients N] [--cpu-hog K[,K...]] [--short]
                         [--no-check] [--json FILE]   the live server under load: loop stalls, API and /ws lag
    edgestate bench audience [--phones N] [--every S] [--duration S] [--short] [--json FILE]
    edgestate bench writecost [--baseline REV] [--writes N] [--modes sim,live] [--repeat K] [--json FILE]
    edgestate bench faults [--seeds N] [--seed S] [--processes [--duration S] [--runs R]] [--json FILE]
    edgestate scenario list | run NAME|FILE [--pops ...] [--seed N] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from replication.bench import cli as bench_cli
from replication.cliargs import positive, positive_int
from replication.dissemination import STRATEGIES
from replication.geo import place_replicas, select_pops
from replication.scenarios import cli as scenario_cli

from .bench import audience as bench_audience
from .bench import faults as bench_faults
from .bench import hostile as bench_hostile
from .bench import live as bench_live
from .bench import page as bench_page
from .bench import replica as bench_replica
from . import certs as certs_cli
from .bench import writecost as bench_writecost
from .bench import writes as bench_writes
from .bench import ws as bench_ws
from .replica import cli as replica_cli

EXIT_USAGE = 2


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


def _trusted_proxies(text: str) -> list[str]:
    """Addresses and networks only: uvicorn would also take '*' (trust every client) and host names."""
    import ipaddress

    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an IP address or network: {item!r}") from None
    return items


DEFAULT_SPEED = 0.1  # an Atlantic crossing (~37 ms) takes about a third of a second to watch


def _speed(text: str) -> float:
    from .dashboard.simulated import check_speed

    try:
        return check_speed(float(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None




def _version() -> str:
    """From the installed package's metadata (pyproject.toml's version), not a second copy here."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgestate")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgestate", description="Edge state without coordination: CRDT replicas at real edge locations."
    )
    parser.add_argument("--version", action="version", version=f"edgestate {_version()}",
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="serve the HTTP API over the embedded simulated cluster",
        description="Serve the HTTP API over an embedded cluster of replicas, one per POP, on the simulated WAN.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=_port, default=8000, help="port to listen on (default: %(default)s)")
    serve.add_argument(
        "--pops",
        default="default",
        metavar="all|default|ID,ID,...",
        help="which POPs get a replica: all of them, the default set, or a list of ids (default: %(default)s)",
    )
    serve.add_argument("--strategy", choices=list(STRATEGIES), default="plumtree",
                       help="how writes spread between replicas (default: %(default)s)")
    serve.add_argument("--speed", type=_speed, default=DEFAULT_SPEED,
                       help="virtual time per wall time: 1 is real time, smaller is slower (default: %(default)s)")
    serve.add_argument("--seed", type=int, default=0, help="seed of the simulated network (default: %(default)s)")
    serve.add_argument("--processes", action="store_true",
                       help="run each POP as a real replica process (edgestate replica) on loopback, with the "
                            "geographic latency injected, instead of the simulator; time then runs at speed 1")
    attach = serve.add_argument_group(
        "attach",
        "Draw replicas that run elsewhere (edgestate replica --http ... on other hosts) instead of running any: "
        "each through its HTTP API and its event feed (GET /api/events). Crash and recover are theirs to do "
        "where they run; partitions go through each replica's admin API (its admin token). See README: Attach.",
    )
    attach.add_argument("--attach", action="append", default=[], metavar="ID=URL",
                        help="a replica to draw: its id (a POP id such as lhr, or lhr-2; the map places it there) "
                             "and its HTTP API's address, http(s)://HOST:PORT; repeat for each replica")
    attach.add_argument("--attach-file", type=Path, metavar="FILE",
                        help="the replicas to draw from a TOML or JSON file: [[replica]] tables with id, url and, "
                             "optionally, token, admin_token, ca (README: Attach)")
    attach.add_argument("--attach-token", default=os.environ.get("EDGESTATE_ATTACH_TOKEN") or None, metavar="T",
                        help="the replicas' --token, sent to every attached replica (the file may give one per "
                             "replica); also from EDGESTATE_ATTACH_TOKEN")
    attach.add_argument("--attach-admin-token", default=os.environ.get("EDGESTATE_ATTACH_ADMIN_TOKEN") or None,
                        metavar="A", help="the replicas' --admin-token, for partitions through their admin API; "
                                          "also from EDGESTATE_ATTACH_ADMIN_TOKEN")
    attach.add_argument("--attach-ca", type=Path, metavar="FILE",
                        help="a CA certificate to trust for https:// replicas (default: the system's trust store)")
    serve.add_argument("--scenario", action="append", default=[], metavar="FILE",
                       help="add a scenario file to those the page and POST /api/scenarios/{name} can run "
                            "(repeatable; checked at start: a malformed file exits 2 naming its line)")
    serve.add_argument("--public-url", metavar="URL",
                       help="the address the audience opens, shown as a QR code on the page: an http:// or "
                            "https:// URL (without a path, /join is added). Default: the address the page "
                            "was reached at, with /join")
    serve.add_argument("--data-dir", type=Path, metavar="DIR",
                       help="with --processes: where the replicas keep their state (default: a temporary "
                            "directory, removed at exit)")
    access = serve.add_argument_group(
        "access control",
        "Bound to loopback with no token, everything is open. Any other --host needs a --token. "
        "Tokens may also come from the environment (EDGESTATE_TOKEN, EDGESTATE_ADMIN_TOKEN), "
        "which keeps them out of the process list.",
    )
    access.add_argument("--token", default=os.environ.get("EDGESTATE_TOKEN") or None, metavar="T",
                        help="writes need 'Authorization: Bearer T'")
    access.add_argument("--admin-token", default=os.environ.get("EDGESTATE_ADMIN_TOKEN") or None, metavar="A",
                        help="partition, crash, recover and the simulation controls need 'Authorization: Bearer A'; "
                             "once --token or --audience is given they are off without it")
    access.add_argument("--private", action="store_true",
                        help="reads, the page and /ws need a token too (default: they are open)")
    access.add_argument("--audience", action="store_true",
                        help="audience mode: writes are rate-limited per client address, and the page shows the "
                             "admin controls only to holders of the admin token")
    access.add_argument("--write-rate", type=positive, default=5.0, metavar="R",
                        help="audience mode: writes per second per client (default: %(default)s)")
    access.add_argument("--write-burst", type=positive_int, default=10, metavar="B",
                        help="audience mode: writes a client may send at once (default: %(default)s)")
    access.add_argument("--forwarded-allow-ips", type=_trusted_proxies, default=[], metavar="IP,NET,...",
                        help="proxies whose X-Forwarded-For and X-Forwarded-Proto headers are believed: addresses "
                             "or networks (10.0.0.0/8), comma-separated. The rate limit counts writes per client "
                             "address, so name only your own proxies. Default: none, not even "
                             "loopback: every client is the address it connects from (FORWARDED_ALLOW_IPS in the "
                             "environment is ignored)")
    from .web.https import add_arguments as add_https_arguments

    add_https_arguments(serve.add_argument_group(
        "HTTPS",
        "Plain HTTP unless both are given. Off loopback, give them (or put a TLS proxy in front): over plain "
        "HTTP the tokens are readable by anyone on the path, and serve warns at start. With --processes the "
        "dashboard serves HTTPS; its replicas' own HTTP stays plain on loopback.",
    ), "--host:--port", ws=True)
    from .web import logs

    logs.add_arguments(serve)
    replica_cli.add_parser(sub)
    certs_cli.add_parser(sub)
    scenario_cli.add_parser(sub)
    which = bench_cli.add_parser(sub)
    bench_ws.add_parser(which)
    bench_replica.add_parser(which)
    bench_faults.add_parser(which)
    bench_hostile.add_parser(which)
    bench_writes.add_parser(which)
    bench_page.add_parser(which)
    bench_live.add_parser(which)
    bench_audience.add_parser(which)
    bench_writecost.add_parser(which)
    return parser


def _settings(args: argparse.Namespace):
    from .web.security import Settings  # imported when serving: `bench` needs no web stack

    return Settings(
        host=args.host, token=args.token, admin_token=args.admin_token, private=args.private,
        audience=args.audience, write_rate=args.write_rate, write_burst=args.write_burst,
    )


def _serve(args: argparse.Namespace) -> int:
    try:
        pops = select_pops(args.pops)
    except ValueError as e:
        print(f"edgestate serve: error: --pops {args.pops!r}: {e}", file=sys.stderr)
        return EXIT_USAGE
    from .web.security import WEAK_TOKEN_CHARS

    settings = _settings(args)
    problems = settings.problems()
    if problems:
        print(f"edgestate serve: error: {problems[0]}", file=sys.stderr)
        return EXIT_USAGE
    for flag, tok in (("--token", settings.token), ("--admin-token", settings.admin_token)):
        if tok is not None and len(tok) < WEAK_TOKEN_CHARS:
            print(f"edgestate serve: warning: {flag} is shorter than {WEAK_TOKEN_CHARS} characters: easy to guess",
                  file=sys.stderr)
    public_url = None
    if args.public_url is not None:
        from .dashboard.join.qr import check_public_url

        try:
            public_url = check_public_url(args.public_url)
        except ValueError as e:
            print(f"edgestate serve: error: --public-url {args.public_url!r}: {e}", file=sys.stderr)
            return EXIT_USAGE
    https, code = _https(args)
    if code:
        return code

    from replication.scenarios import Catalogue, ScenarioError

    from .dashboard.simulated import build_live
    from .dashboard.server import create_app

    try:
        scenarios = Catalogue.with_files(args.scenario, [p.id for p in place_replicas(pops)])
    except ScenarioError as e:
        print(f"edgestate serve: error: --scenario: {e}", file=sys.stderr)
        return EXIT_USAGE

    if args.data_dir is not None and not args.processes:
        print("edgestate serve: error: --data-dir goes with --processes", file=sys.stderr)
        return EXIT_USAGE
    attached = None
    if args.attach or args.attach_file is not None:
        attached = _attach_targets(args)
        if attached is None:
            return EXIT_USAGE
        pops = [p.pop for p in _attach_placements(attached)]
    with contextlib.ExitStack() as stack:
        if attached is not None:
            from .attach.cluster import AttachedLive

            live = AttachedLive(attached, strategy=args.strategy)
        elif args.processes:
            from .processes.cluster import ProcessLive

            root = args.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgestate-")))
            live = ProcessLive(place_replicas(pops), root, strategy=args.strategy)
        else:
            # a fresh token secret per run: tokens from an earlier run name dots this run hands out again
            live = build_live(place_replicas(pops), strategy=args.strategy, seed=args.seed, speed=args.speed)
        app = create_app(live, run_clock=True, settings=settings, scenarios=scenarios, public_url=public_url,
                         access_log=args.access_log)
        return _run_server(args, app, pops, https)


def _attach_targets(args: argparse.Namespace):
    """The attached replicas, checked, or None after one line saying what is wrong."""
    from .attach.config import targets
    from .web.security import is_loopback

    if args.processes:
        print("edgestate serve: error: --attach and --processes are two ways to get replicas: give one",
              file=sys.stderr)
        return None
    if args.pops != "default":
        print("edgestate serve: error: --pops does not go with --attach: the attached replicas' ids say where "
              "they are", file=sys.stderr)
        return None
    try:
        out = targets(args.attach, args.attach_file, token=args.attach_token, admin_token=args.attach_admin_token,
                      ca=args.attach_ca)
    except ValueError as e:
        print(f"edgestate serve: error: {e}", file=sys.stderr)
        return None
    for t in out:
        if t.scheme == "http" and (t.token or t.admin_token) and not is_loopback(t.host):
            print(f"edgestate serve: warning: {t.id} is attached over plain http:// at {t.host}: its token crosses "
                  "the network readable by anyone on the path (serve the replica with --tls-cert/--tls-key and "
                  "attach it as https://)", file=sys.stderr)
    return out


def _attach_placements(targets):
    from .attach.config import placement

    return [placement(t.id) for t in targets]


def _https(args: argparse.Namespace):
    """(the loaded certificate or None, 0), or (None, exit code) after saying what is wrong in one line."""
    from .web import https

    tokens = args.token is not None or args.admin_token is not None or args.private
    return https.from_flags("edgestate serve", args.tls_cert, args.tls_key, host=args.host, tokens=tokens,
                            flag="--host")


def _run_server(args: argparse.Namespace, app, pops, https=None) -> int:
    import uvicorn

    from .dashboard.ws.limits import uvicorn_options
    from .web import logs
    from .web.security import RedactTokens

    logs.configure(args.log_level, args.log_format)

    # The cluster and app are built and long-lived: keep them out of the collector's full
    # passes, which otherwise pause the event loop often enough to show in /ws lag tails.
    gc.freeze()
    # Forwarded headers are believed only from the proxies named by --forwarded-allow-ips (uvicorn's
    # default trusts them from 127.0.0.1, so any local client could pick its rate-limit address);
    # uvicorn_options: the WebSocket limits (message size, no compression, bounded send buffers).
    trusted = args.forwarded_allow_ips
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, **logs.uvicorn_options(args.log_level),
                                           proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None,
                                           **uvicorn_options(), **(https.uvicorn_options() if https else {})))
    for name in ("uvicorn.access", "uvicorn.error"):  # uvicorn may log a request line with its query
        logging.getLogger(name).addFilter(RedactTokens())
    logging.getLogger("uvicorn.error").info(
        "edgestate: %d replica(s): %s", len(pops), ", ".join(p.id for p in pops)
    )
    if https is not None:
        logging.getLogger("uvicorn.error").info("edgestate: %s", https.describe())

    # uvicorn catches SIGINT/SIGTERM, shuts down gracefully, then re-raises the signal
    # to the handler that was installed before it. Make that handler raise
    # KeyboardInterrupt for SIGTERM too, and treat it as the clean exit it is.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main_thread else None
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> int:
    """The command, and one manner: a reader that goes away (`edgestate scenario list | head -1`)
    ends it quietly with status 0, no traceback: the reader had what it wanted, and nothing
    went wrong here. (Python ignores SIGPIPE, so a closed pipe is a BrokenPipeError at the next
    write; stdout is then pointed at /dev/null, or the interpreter's own last flush at exit
    would fail again and print "Exception ignored".)"""
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: buffered output meets the closed pipe here
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        return _serve(args)
    if args.command == "replica":
        return replica_cli.run(args)
    if args.command == "certs":
        return certs_cli.run(args)
    if args.command == "scenario":
        return scenario_cli.run(args)
    if args.command == "bench":
        if args.bench == "ws":
            return bench_ws.run(args)
        if args.bench == "replica":
            return bench_replica.run(args)
        if args.bench == "faults":
            return bench_faults.run(args)
        if args.bench == "hostile":
            return bench_hostile.run(args)
        if args.bench == "writes":
            return bench_writes.run(args)
        if args.bench == "page":
            return bench_page.run(args)
        if args.bench == "live":
            return bench_live.run(args)
        if args.bench == "audience":
            return bench_audience.run(args)
        if args.bench == "writecost":
            return bench_writecost.main(args)
        return bench_cli.run(args)
    parser.error(f"unknown command {args.command!r}")  # unreachable: argparse checks choices
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
