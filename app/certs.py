"""`edgestate certs init|issue`: the command line over `replication.io.certs`.

    edgestate certs init  --dir D [--days 3650] [--force]            D/ca.pem, D/ca.key
    edgestate certs issue --dir D --id ID [--host NAME ...] [--days 365] [--force]     D/ID.pem, D/ID.key

Every refusal is one line on stderr and exit 2, with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from replication.cliargs import positive_int

EXIT_USAGE = 2

_FILES = (
    "Files (all created with mode 0600; existing ones are refused without --force): "
    "DIR/ca.pem (the cluster CA's certificate, given to every replica as --ca), "
    "DIR/ca.key (the CA's private key: keep it where certificates are issued, not on the replicas), "
    "DIR/ID.pem and DIR/ID.key (replica ID's certificate and private key, for its --cert and --key). "
    "A replica certificate names its id in the URI subject alternative name edgestate://replica/ID. "
    "Keys are ECDSA P-256. Give them to `edgestate replica --ca DIR/ca.pem --cert DIR/ID.pem --key DIR/ID.key`: "
    "peer links then run over mutual TLS 1.3, and a peer whose certificate names another id is refused. "
    "To rotate the CA: init a new one in another directory, restart each replica with --ca twice (old and "
    "new), reissue and restart each with its new certificate, then restart each with only the new --ca."
)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "certs",
        help="make the cluster CA and per-replica certificates for mutual TLS between replicas",
        description="Make a cluster CA and one key and certificate per replica. " + _FILES,
    )
    which = p.add_subparsers(dest="certs", metavar="init|issue", required=True)
    init = which.add_parser(
        "init", help="make the cluster CA: DIR/ca.pem and DIR/ca.key",
        description="Make the cluster CA in DIR (created if missing): DIR/ca.pem (certificate) and "
                    "DIR/ca.key (private key), mode 0600.",
    )
    init.add_argument("--dir", required=True, type=Path, metavar="DIR", help="where the CA's files go")
    init.add_argument("--days", type=positive_int, default=3650, help="validity in days (default: %(default)s)")
    init.add_argument("--force", action="store_true", help="replace an existing CA (every issued certificate "
                                                            "then stops verifying against the new one)")
    issue = which.add_parser(
        "issue", help="make replica ID's key and certificate: DIR/ID.pem and DIR/ID.key",
        description="Make replica ID's private key DIR/ID.key and certificate DIR/ID.pem (mode 0600), signed "
                    "by the CA in DIR (DIR/ca.pem, DIR/ca.key; make it with `certs init`). The certificate's "
                    "subject alternative name is the URI edgestate://replica/ID (peers check it), plus a DNS or IP "
                    "address name for each --host (HTTPS clients check those).",
    )
    issue.add_argument("--dir", required=True, type=Path, metavar="DIR", help="the directory holding the CA")
    issue.add_argument("--id", required=True, metavar="ID",
                       help="the replica id (letters, digits, '-', '_', '.'; at most 64 characters)")
    issue.add_argument("--host", action="append", default=[], metavar="NAME",
                       help="also name this DNS name or IP address (repeatable), so the certificate can serve "
                            "an HTTP API over HTTPS under it (--tls-cert of serve or replica); clients that "
                            "trust DIR/ca.pem then accept it")
    issue.add_argument("--days", type=positive_int, default=365, help="validity in days (default: %(default)s)")
    issue.add_argument("--force", action="store_true", help="replace existing DIR/ID.pem and DIR/ID.key")
    return p


def run(args: argparse.Namespace) -> int:
    from replication.io import certs  # imported here: other commands need no cryptography

    try:
        if args.certs == "init":
            made = certs.init_ca(args.dir, days=args.days, force=args.force)
        else:
            made = certs.issue(args.dir, args.id, days=args.days, force=args.force, hosts=args.host)
    except certs.CertError as e:
        print(f"edgestate certs {args.certs}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {made.cert} and {made.key}")
    return 0
