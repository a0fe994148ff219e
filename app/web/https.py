"""HTTPS for the HTTP API of `edgestate serve` and `edgestate replica`: `--tls-cert FILE --tls-key FILE`.

One place for both programs: the flags and their help, the checks made before anything starts
(both flags or neither; each file readable, a PEM certificate and an unencrypted PEM key that
belong together), and the warning when a token would cross the network in plain HTTP.

The server's `ssl.SSLContext` is built here, once, before the server starts, and handed to
uvicorn as it is (`ssl_context_factory`): a bad file is then one line naming it, never a
traceback from inside uvicorn, and the files are read exactly once (nothing can change between
the check and the use). `ssl.load_cert_chain` would ask for the passphrase of an encrypted key on
the terminal; the key is parsed first and an encrypted one refused, so it never gets the chance.

TLS 1.2 is the floor (what browsers, curl and Python clients all speak); 1.3 is used when the
client has it. The WebSocket at `/ws` rides the same TLS (wss:), and the page picks `wss:`
itself when it was loaded over https. Clients are not asked for certificates: callers prove
who they are with the token, which TLS now keeps private.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TlsFileError(Exception):
    """A one-line reason the certificate or key cannot be used, naming the flag and the file."""


@dataclass(frozen=True)
class Https:
    """A loaded server context and what to say about it at start."""

    context: ssl.SSLContext
    cert: Path
    subject: str
    not_after: dt.datetime
    warnings: tuple[str, ...]

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for `uvicorn.Config`: serve with this context as it is."""
        context = self.context

        def factory(_config: object, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return context

        return {"ssl_context_factory": factory}

    def describe(self) -> str:
        return (f"HTTPS with {self.cert} ({self.subject}, valid until "
                f"{self.not_after:%Y-%m-%d %H:%M} UTC)")


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, api: str, *, ws: bool) -> None:
    """`--tls-cert` and `--tls-key`; `api` says which address serves the API and `ws` whether it
    serves /ws (for the help)."""
    parser.add_argument("--tls-cert", type=Path, metavar="FILE",
                        help=f"serve the HTTP API ({api}) over HTTPS with this PEM certificate (the server's "
                             "certificate first, then any intermediates); needs --tls-key. "
                             + ("/ws is then wss:. " if ws else "")
                             + "`edgestate certs issue --host NAME` makes one, or bring your own")
    parser.add_argument("--tls-key", type=Path, metavar="FILE",
                        help="the certificate's private key (PEM, unencrypted; keep it mode 0600); "
                             "needs --tls-cert")


def usage_problem(cert: Path | None, key: Path | None) -> str | None:
    """Both or neither: a certificate without its key (or a key alone) serves nothing."""
    if (cert is None) != (key is None):
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        return f"{given} needs {missing}: give both (HTTPS) or neither (plain HTTP)"
    return None


def load(cert: Path, key: Path, *, now: dt.datetime | None = None) -> Https:
    """The server context for `cert` and `key`. Raises TlsFileError naming the file at fault."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_pem = _read("--tls-cert", cert)
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsFileError(f"--tls-cert {cert}: not a PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    leaf = chain[0]
    key_pem = _read("--tls-key", key)
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise TlsFileError(f"--tls-key {key}: the key is encrypted; give it unencrypted "
                           "(and readable only by this user)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsFileError(f"--tls-key {key}: not a PEM private key (-----BEGIN PRIVATE KEY-----)") from None
    if private.public_key() != leaf.public_key():
        raise TlsFileError(f"--tls-key {key} is not the key of --tls-cert {cert} (the first certificate in it)")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as e:  # what the checks above did not catch (an unusual key type, say)
        raise TlsFileError(f"--tls-cert {cert} with --tls-key {key}: {e.reason or e}") from None
    except OSError as e:  # the file changed since it was read
        raise TlsFileError(f"cannot read {e.filename or cert}: {e.strerror}") from None

    warnings = []
    moment = now or dt.datetime.now(dt.timezone.utc)
    if leaf.not_valid_after_utc < moment:
        warnings.append(f"--tls-cert {cert} expired on {leaf.not_valid_after_utc:%Y-%m-%d}: "
                        "clients will refuse it until it is renewed")
    elif leaf.not_valid_before_utc > moment:
        warnings.append(f"--tls-cert {cert} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"--tls-key {key} is readable by others (chmod 600 it)")
    return Https(context=context, cert=cert, subject=leaf.subject.rfc4514_string() or "no subject",
                 not_after=leaf.not_valid_after_utc, warnings=tuple(warnings))


def _read(flag: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TlsFileError(f"{flag} {path}: cannot read it: {e.strerror}") from None


def plain_token_warning(host: str, *, tokens: bool, https: bool, flag: str) -> str | None:
    """The start-up warning for tokens sent in clear over the network, or None.

    Off loopback a token is required, and over plain HTTP it is readable by anyone on the path
    (a shared Wi-Fi, a proxy, a tap): say so once, naming the fix. A TLS proxy in front of the
    server is the other fix, so this warns rather than refuses."""
    from .security import is_loopback  # here: the flags above are added without the web stack

    if https or not tokens or is_loopback(host):
        return None
    return (f"{flag} {host} is reachable from other machines over plain HTTP: the token is readable by anyone "
            "on the path; serve HTTPS with --tls-cert/--tls-key (or put a TLS proxy in front)")


def from_flags(prog: str, cert: Path | None, key: Path | None, *, host: str | None, tokens: bool, flag: str,
               problem: str | None = None) -> tuple[Https | None, int]:
    """What `serve` and `replica` do with --tls-cert/--tls-key: (the loaded certificate or None, 0),
    or (None, 2) after one line on stderr saying what is wrong. Warnings (an expired certificate, a
    key others can read, a token in plain HTTP off loopback) are printed and do not stop the start.
    `problem`: a usage problem of the caller's own, reported the same way; `host` None: no HTTP."""
    import sys

    problem = usage_problem(cert, key) or problem
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return None, 2
    loaded = None
    if cert is not None and key is not None:
        try:
            loaded = load(cert, key)
        except TlsFileError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return None, 2
        for w in loaded.warnings:
            print(f"{prog}: warning: {w}", file=sys.stderr)
    if host is not None:
        warning = plain_token_warning(host, tokens=tokens, https=loaded is not None, flag=flag)
        if warning:
            print(f"{prog}: warning: {warning}", file=sys.stderr)
    return loaded, 0

