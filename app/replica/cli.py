"""`edgestate replica`: one real replica process.

    edgestate replica --id lhr --listen 127.0.0.1:7001 --http 127.0.0.1:8001 \\
        --peer fra=127.0.0.1:7002 --peer ... --data-dir DIR --secret-file F \\
        --ca certs/ca.pem --cert certs/lhr.pem --key certs/lhr.key [--inject-latency]
        [--tls-cert FILE --tls-key FILE]     (HTTPS for the --http API only; see app/web/https.py)

Every replica of a cluster gets the same secret file and the full peer list (its own entry
may be left out). With --ca/--cert/--key (from `edgestate certs`) peer links run over mutual
TLS 1.3 and each replica can speak only as the id its certificate names; without them frames
are only tagged with the secret: see SECRET_ONLY. SIGINT or SIGTERM stops it cleanly: everything flushed and checkpointed,
so the next start keeps its actor; SIGKILL is what the crash tests send.

Damaged storage found at start (a record or WAL frame that fails its checksum, an unreadable
database) is logged naming the file and record; the replica then repairs from its peers,
answering 503 `recovering` meanwhile. With no peer to repair from it exits 1, unless
--accept-data-loss says to serve only what verified.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import stat
import sys
from pathlib import Path

from replication.dissemination import STRATEGIES
from replication.geo import LatencyModel, all_pops
from replication.io.net import parse_address
from replication.node import incarnation_of

EXIT_USAGE = 2
GIL_SWITCH_INTERVAL_S = 0.001  # see `run`: the flush thread gets the GIL back within 1 ms
MIN_SECRET_BYTES = 16
SECRET_ONLY = ("without --ca/--cert/--key, peer frames are only tagged with the shared secret: not encrypted "
               "(a capture shows every value), any holder of the secret can speak as any replica, and recorded "
               "frames can be replayed. Fine on loopback for development; use certificates anywhere else")


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _peer(text: str) -> tuple[str, tuple[str, int]]:
    rid, sep, addr = text.partition("=")
    if not sep or not rid:
        raise argparse.ArgumentTypeError(f"{text!r} is not ID=HOST:PORT")
    return rid, _address(addr)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "replica",
        help="run one real replica process (TCP to its peers, SQLite on disk, HTTP API)",
        description="Run one replica as its own process: peers over mutual TLS 1.3 (--ca/--cert/--key) or, for "
                    "loopback development, frames tagged with the shared secret; state in SQLite under --data-dir "
                    "(a write is answered once durable); the HTTP API on --http (HTTPS with --tls-cert and "
                    "--tls-key). Note: " + SECRET_ONLY + ".",
    )
    p.add_argument("--id", required=True, help="this replica's id (a POP id such as lhr, for --inject-latency)")
    p.add_argument("--listen", required=True, type=_address, metavar="HOST:PORT", help="address for peer traffic")
    p.add_argument("--http", type=_address, metavar="HOST:PORT", help="address for the HTTP API (default: none)")
    from ..web.https import add_arguments as add_https_arguments

    # HTTPS for the HTTP API only: peer links are not affected by these two
    add_https_arguments(p, "--http; not the peer links", ws=False)
    p.add_argument("--peer", action="append", type=_peer, default=[], metavar="ID=HOST:PORT",
                   help="a peer's id and peer address; repeat for each peer")
    p.add_argument("--data-dir", required=True, type=Path, help="directory for this replica's state (created)")
    p.add_argument("--secret-file", required=True, type=Path,
                   help=f"the cluster secret (at least {MIN_SECRET_BYTES} bytes), the same file on every replica: "
                        "it signs the context tokens clients carry between replicas and, without certificates, "
                        "tags peer frames")
    p.add_argument("--ca", action="append", type=Path, default=[], metavar="FILE",
                   help="a CA certificate peers' certificates must be signed by (DIR/ca.pem from `edgestate certs "
                        "init`); repeat to trust two CAs while rotating, then drop the old one. With --cert and "
                        "--key, peer links run over mutual TLS 1.3")
    p.add_argument("--cert", type=Path, metavar="FILE",
                   help="this replica's certificate (DIR/ID.pem from `edgestate certs issue --id ID`)")
    p.add_argument("--key", type=Path, metavar="FILE", help="this replica's private key (DIR/ID.key)")
    p.add_argument("--inject-latency", action="store_true",
                   help="delay outgoing frames by the geographic latency model (ids must be POP ids)")
    p.add_argument("--strategy", choices=list(STRATEGIES), default="plumtree",
                   help="dissemination (default: %(default)s); every replica of a cluster must use the same")
    p.add_argument("--seed", type=int, default=0, help="seed of the replica's random choices (default: %(default)s)")
    p.add_argument("--token", default=os.environ.get("EDGESTATE_TOKEN") or None, metavar="T",
                   help="HTTP writes need 'Authorization: Bearer T' (needed unless --http is on loopback)")
    p.add_argument("--admin-token", default=os.environ.get("EDGESTATE_ADMIN_TOKEN") or None, metavar="A",
                   help="partition controls need 'Authorization: Bearer A'")
    p.add_argument("--events", type=_address, metavar="HOST:PORT",
                   help="stream this replica's events to a dashboard (edgestate serve --processes sets it)")
    p.add_argument("--actor", metavar="ID~N",
                   help="after this replica's data was lost: start the empty data directory under this new "
                        "actor (one past any incarnation it had), never reusing dots peers already hold")
    p.add_argument("--accept-data-loss", action="store_true",
                   help="when the stored state is damaged and there is no --peer to repair it from, start anyway "
                        "with the records that verified (the damaged ones are lost; the damaged files are kept "
                        "aside as edgestate.db.corrupt-TIME). Without it the replica refuses to start (exit 1). "
                        "With peers, damage is always repaired from them")
    p.add_argument("--parent-pid", type=int, metavar="PID",
                   help="stop cleanly when this process is gone (serve --processes sets it: no orphans)")
    from ..web import logs

    logs.add_arguments(p)
    return p


def read_secret(path: Path) -> bytes:
    """The secret file's bytes, trailing newline stripped. Raises ValueError saying what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    secret = raw.rstrip(b"\r\n")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds {len(secret)} bytes; a cluster secret needs at least {MIN_SECRET_BYTES}")
    return secret


def _problems(args) -> list[str]:
    out = []
    peers: dict[str, tuple[str, int]] = {}
    for rid, addr in args.peer:
        if rid in peers and peers[rid] != addr:
            out.append(f"--peer {rid} is given twice with different addresses")
        peers[rid] = addr
    if args.id in peers and peers[args.id] != args.listen:
        out.append(f"--peer {args.id}={peers[args.id][0]}:{peers[args.id][1]} is this replica, but --listen differs")
    peers.pop(args.id, None)
    if args.inject_latency:
        known = {p.id for p in all_pops()}
        unknown = sorted({args.id, *peers} - known)
        if unknown:
            out.append(f"--inject-latency needs POP ids; not POPs: {', '.join(unknown)}")
    if args.actor is not None and not incarnation_of(args.id, args.actor):  # None: not this id's; 0: the id
        out.append(f"--actor must be {args.id}~N with N >= 1, got {args.actor!r}")
    args.peers = peers
    return out


def _tls(args, problems: list[str]):
    """(server, client) contexts for mutual TLS, None without certificates; a problem if the
    files are incomplete, unreadable, or make a certificate our peers would refuse."""
    given = [name for name, v in (("--ca", args.ca), ("--cert", args.cert), ("--key", args.key)) if v]
    if not given:
        return None
    if len(given) < 3:
        missing = [n for n in ("--ca", "--cert", "--key") if n not in given]
        problems.append(f"{' and '.join(given)} given without {' and '.join(missing)}: TLS needs all three")
        return None
    from replication.io.tls import TLSConfigError, check_own, contexts

    try:
        pair = contexts(args.ca, args.cert, args.key)
        check_own(args.ca, args.cert, args.id)
    except TLSConfigError as e:
        problems.append(f"TLS: {e}")
        return None
    return pair


def run(args: argparse.Namespace) -> int:
    from ..web import logs

    logs.configure(args.log_level, args.log_format)
    problems = _problems(args)
    try:
        secret = read_secret(args.secret_file)
    except ValueError as e:
        problems.append(f"--secret-file: {e}")
    args.tls = _tls(args, problems)
    if problems:
        for p in problems:
            print(f"edgestate replica: error: {p}", file=sys.stderr)
        return EXIT_USAGE
    if args.tls is None and not _loopback(args.listen[0]):
        print(f"edgestate replica: warning: --listen {args.listen[0]} is not loopback, and {SECRET_ONLY}",
              file=sys.stderr)
    mode = args.secret_file.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"edgestate replica: warning: {args.secret_file} is readable by others (chmod 600 it)", file=sys.stderr)
    from ..web.security import Settings

    settings = Settings(host=args.http[0] if args.http else "127.0.0.1", token=args.token, admin_token=args.admin_token)
    if args.http and settings.problems():
        for p in settings.problems():  # Settings speaks of serve's --host; here the address is --http
            print(f"edgestate replica: error: {p.replace('--host ', '--http ', 1)}", file=sys.stderr)
        return EXIT_USAGE
    https, code = _https(args)
    if code:
        return code
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency; plain asyncio works, only slower
        uvloop = None
    runner = uvloop.run if uvloop is not None else asyncio.run
    # Group commit runs each flush in a worker thread, which needs the GIL back after every
    # SQLite step and after the fsync; while the loop is busy answering requests, CPython hands
    # it over only every switch interval (5 ms by default), so under load a 4 ms commit took 8.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        return runner(_main(args, secret, settings, https))
    except KeyboardInterrupt:
        return 0


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _https(args):
    """(the loaded certificate or None, 0), or (None, 2) after one line saying what is wrong."""
    from ..web import https

    needs_http = None
    if args.tls_cert is not None and not args.http:
        needs_http = "--tls-cert/--tls-key serve the HTTP API over HTTPS: they need --http HOST:PORT"
    tokens = args.token is not None or args.admin_token is not None
    return https.from_flags("edgestate replica", args.tls_cert, args.tls_key,
                            host=args.http[0] if args.http else None, tokens=tokens, flag="--http",
                            problem=needs_http)


def _server_class():
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGINT/SIGTERM once it has shut down, which would end the process
        before the replica's own clean stop (flush, checkpoint, 'clean' mark) runs."""

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    return Server


def _watch_parent(pid: int | None, stop) -> asyncio.Task:
    async def watch() -> None:
        if pid is None:
            return
        while True:
            await asyncio.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                logging.getLogger("edgestate.replica").warning("parent process %d is gone: stopping", pid)
                stop()
                return
            except PermissionError:
                pass  # it exists, under another user

    return asyncio.get_running_loop().create_task(watch())


def _latency(me: str, peers):
    """With --inject-latency every member is a POP: the delay each frame to a peer is held for, and
    the spanning tree (see dissemination.seedtree) every member computes the same way from the same
    model, so this replica's first writes follow a tree."""
    from replication.dissemination.seedtree import SeedTree

    pops = {p.id: p for p in all_pops()}
    model = LatencyModel()

    def between(a: str, b: str) -> float:
        return model.one_way_ms(pops[a], pops[b])

    cache: dict[str, float] = {}

    def delay_ms(peer: str) -> float:
        d = cache.get(peer)
        if d is None:
            d = cache[peer] = between(me, peer)
        return d

    return delay_ms, SeedTree([me, *peers], between)


def _log_start(args, port: int) -> None:
    """One info line an operator reads first: what this replica listens on and who its peers are."""
    host = args.listen[0]
    http = "none" if not args.http else f"{'https' if args.tls_cert else 'http'}://{args.http[0]}:{args.http[1]}"
    peers = ", ".join(f"{rid}={h}:{p}" for rid, (h, p) in sorted(args.peers.items())) or "none"
    logging.getLogger("edgestate.replica").info(
        "replica %s listening: peers on %s:%d (%s), HTTP API %s; peers: %s; strategy %s; data in %s",
        args.id, host, port, "mutual TLS" if args.tls else "secret-tagged frames, no TLS", http, peers,
        args.strategy, args.data_dir)


async def _main(args, secret: bytes, settings, https=None) -> int:
    import signal

    from replication.io.runner import ReplicaRunner
    from replication.errors import CorruptStorage, StorageError

    feed = stream = None
    if args.events or args.http:  # the TCP stream (--events), GET /api/events on the HTTP API
        from .events import EventFeed, EventStream

        feed = EventFeed(args.id)
        if args.events:
            stream = EventStream(args.id, *args.events)
    delay_ms, seed_tree = _latency(args.id, args.peers) if args.inject_latency else (None, None)
    runner = ReplicaRunner(
        args.id, args.peers, data_dir=args.data_dir, secret=secret, strategy=args.strategy,
        delay_ms=delay_ms, seed=args.seed,
        on_events=feed.push if feed else None, on_sent=feed.sent if feed else None, fresh_actor=args.actor,
        accept_data_loss=args.accept_data_loss, tls=args.tls,
        seed_tree=seed_tree,
    )
    try:
        bound = await runner.start(*args.listen)
    except CorruptStorage as e:
        print(f"edgestate replica: error: {e.message}. Nothing was changed. To start with only the records that "
              "verified (losing the others), add --accept-data-loss; or give it --peer addresses to repair from",
              file=sys.stderr)
        return 1
    except StorageError as e:
        print(f"edgestate replica: error: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"edgestate replica: error: cannot listen on {args.listen[0]}:{args.listen[1]}: {e.strerror}",
              file=sys.stderr)
        await runner.stop()
        return 1
    if feed is not None:
        feed.start(runner)
    if stream is not None:
        stream.start(feed)
    _log_start(args, bound)
    # The restored state and the app are long-lived: keep them out of the collector's full
    # passes, which otherwise stall the event loop (and every write waiting on it) for tens of ms.
    gc.freeze()
    from ..web.gc_steward import GcSteward

    steward = GcSteward()  # and what the state grows to, every few seconds
    steward.start()
    try:
        if args.http:
            import uvicorn

            from ..web.http_head import uvicorn_options as head_options
            from .service import create_replica_app

            _Server = _server_class()

            app = create_replica_app(runner, settings=settings, access_log=args.access_log, feed=feed)
            # proxy_headers off: uvicorn would otherwise take the client address from X-Forwarded-For
            # on any request from loopback; nothing here sits behind a proxy
            from ..web.logs import uvicorn_options as log_options

            config = uvicorn.Config(app, host=args.http[0], port=args.http[1], **log_options(args.log_level),
                                    lifespan="off", proxy_headers=False,
                                    **head_options(), **(https.uvicorn_options() if https else {}))
            server = _Server(config)
            app.state.stopping = lambda: server.should_exit  # ends /api/events streams at shutdown
            if https is not None:
                print(f"edgestate replica: {https.describe()} on {args.http[0]}:{args.http[1]}", file=sys.stderr)
            watch = _watch_parent(args.parent_pid, lambda: setattr(server, "should_exit", True))
            try:
                await server.serve()
            except SystemExit:  # uvicorn exits (code 3) when it cannot bind; report it as ours, exit 1
                pass
            finally:
                watch.cancel()
            if not server.started:
                print(f"edgestate replica: error: cannot serve HTTP on {args.http[0]}:{args.http[1]}", file=sys.stderr)
                return 1
        else:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            watch = _watch_parent(args.parent_pid, stop.set)
            await stop.wait()
            watch.cancel()
    finally:
        await steward.stop()
        if stream is not None:
            await stream.close()
        if feed is not None:
            await feed.close()
        await runner.stop()
    return 0
