"""TLS 1.3 with mutual authentication between replicas: the `ssl` contexts, and the check that a
peer's certificate names the replica id it speaks for.

Not wired into the transport yet (`net` still tags frames with the cluster secret); this is what it
will use. Both contexts require the other side's certificate, verified against the CA files given
(several at once while a CA is being rotated: trust old and new, reissue, then drop the old). Host
names are not checked: peers are dialled by address, and identity is the replica id in the URI
subject alternative name `edgestate://replica/ID` (see `certs`), checked by `check_peer` once the
peer has said which id it speaks for. A certificate that verifies but names another id, or more
than one, or none, is refused: holding some cluster certificate is not enough to speak as `lhr`.
`check_own` is the same judgement on a replica's own certificate at start, so a replica with a
certificate from another CA, an expired one, or one naming another id refuses to start with a
reason instead of failing every handshake.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from .certs import SAN_URI_PREFIX


class TLSConfigError(Exception):
    """The CA, certificate or key files could not be loaded; a one-line reason naming the file."""


class PeerIdentityError(Exception):
    """A verified peer certificate that does not name the replica id the peer claims."""


def server_context(cas: Sequence[Path | str], cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """For accepting peer connections: a client certificate is required."""
    return _context(ssl.PROTOCOL_TLS_SERVER, cas, cert, key)


def client_context(cas: Sequence[Path | str], cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """For dialling peers: presents our certificate, requires theirs."""
    return _context(ssl.PROTOCOL_TLS_CLIENT, cas, cert, key)


def contexts(cas: Sequence[Path | str], cert: Path | str, key: Path | str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) for one replica: both sides of every peer link."""
    return server_context(cas, cert, key), client_context(cas, cert, key)


def replica_ids(peercert: dict | None) -> list[str]:
    """The replica ids a verified certificate (`SSLSocket.getpeercert()`) names in its URI SANs."""
    if not peercert:
        return []
    return [v[len(SAN_URI_PREFIX):] for kind, v in peercert.get("subjectAltName", ())
            if kind == "URI" and isinstance(v, str) and v.startswith(SAN_URI_PREFIX)]


def check_peer(peercert: dict | None, claimed_id: str) -> str:
    """`claimed_id` if the certificate names exactly that replica id, else PeerIdentityError."""
    names = replica_ids(peercert)
    if not names:
        raise PeerIdentityError(f"peer claiming to be {claimed_id!r} presented no certificate naming a replica id")
    if names != [claimed_id]:
        raise PeerIdentityError(f"peer claiming to be {claimed_id!r} has a certificate for {', '.join(map(repr, names))}")
    return claimed_id


def check_own(cas: Sequence[Path | str], cert: Path | str, replica_id: str, *, now: dt.datetime | None = None) -> None:
    """Refuse to start with a certificate peers would refuse: not signed by one of `cas`, outside its
    validity, or not naming exactly `replica_id`. TLSConfigError with a one-line reason, else None."""
    mine = _load_pem(cert, f"certificate {cert}")[0]
    try:
        uris = mine.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    names = [u[len(SAN_URI_PREFIX):] for u in uris if u.startswith(SAN_URI_PREFIX)]
    if names != [replica_id]:
        named = ", ".join(map(repr, names)) or "no replica id"
        raise TLSConfigError(f"certificate {cert} names {named}, not this replica's id {replica_id!r}")
    at = now or dt.datetime.now(dt.timezone.utc)
    if not mine.not_valid_before_utc <= at <= mine.not_valid_after_utc:
        raise TLSConfigError(f"certificate {cert} is valid from {mine.not_valid_before_utc:%Y-%m-%d %H:%M} "
                             f"to {mine.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now")
    for ca in cas:
        for authority in _load_pem(ca, f"CA file {ca}"):
            try:
                mine.verify_directly_issued_by(authority)
                return
            except (ValueError, TypeError, InvalidSignature):
                continue
    raise TLSConfigError(f"certificate {cert} is not signed by the CA in {', '.join(map(str, cas))}")


def _load_pem(path: Path | str, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file, or TLSConfigError naming `what` and why."""
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except OSError as e:
        raise TLSConfigError(f"{what}: {e.strerror}") from None
    except ValueError:
        raise TLSConfigError(f"{what}: not a PEM certificate") from None


def _context(protocol: int, cas: Sequence[Path | str], cert: Path | str, key: Path | str) -> ssl.SSLContext:
    if isinstance(cas, (str, Path)) or not cas:
        raise TLSConfigError("at least one CA file is needed (a list: several while a CA is rotated)")
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identity is the replica id in the URI SAN: check_peer
    ctx.verify_mode = ssl.CERT_REQUIRED
    for ca in cas:
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except FileNotFoundError:
            raise TLSConfigError(f"CA file {ca}: not found") from None
        except (OSError, ssl.SSLError) as e:
            raise TLSConfigError(f"CA file {ca}: not a PEM certificate ({_reason(e)})") from None
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except FileNotFoundError as e:
        raise TLSConfigError(f"{e.filename or f'{cert} or {key}'}: not found") from None
    except (OSError, ssl.SSLError) as e:
        raise TLSConfigError(f"certificate {cert} with key {key}: {_reason(e)}") from None
    return ctx


def _reason(e: Exception) -> str:
    return str(getattr(e, "reason", None) or getattr(e, "strerror", None) or e).replace("\n", " ")
