"""`edgestate certs`: a cluster CA and one key and certificate per replica, for mutual TLS between peers.

    DIR/ca.pem    the cluster CA's certificate (every replica trusts it: `--ca`)
    DIR/ca.key    the CA's private key (keep it off the replicas; only `certs issue` needs it)
    DIR/ID.pem    replica ID's certificate, signed by the CA
    DIR/ID.key    replica ID's private key

Identity: a replica certificate names its replica id in a URI subject alternative name,
`edgestate://replica/ID` (also in the subject CN, for people reading it; only the SAN counts).
A URI SAN, not a DNS one, because a replica id is not a host name: peers are dialled by
address, and the id is checked against the SAN by edgestate itself (`replication.io.tls`),
not by OpenSSL's host name matching.

Keys are ECDSA P-256 with SHA-256 signatures: accepted by every OpenSSL that Python's `ssl`
links against, for TLS 1.3 server and client authentication alike. Validity: the CA 10 years,
a replica 1 year (`--days`); not_before is set an hour back, so a peer whose clock is a little
behind does not refuse a fresh certificate.

Every file (certificates too: the issue asks for 0600 throughout, and nothing but the
replica's own user needs to read them) is created with mode 0600 by `os.open`, never chmod'ed
afterwards, so no other user can ever open it, not even for an instant. Existing files are
refused unless `force`; then the new file is written beside the old one and renamed over it.
HTTPS: `hosts` (`certs issue --host NAME`, repeatable) adds DNS or IP address subject alternative
names, so the same certificate can serve a replica's or the dashboard's HTTP API over HTTPS
(`--tls-cert`): clients check those names the usual way. They change nothing for peers, which
look only at the URI SAN.

Ids: the existing replica id rule (a non-empty string of at most 64 characters) and, because
the id becomes a file name and a URI path, letters, digits, '-', '_' and '.' only, starting
with a letter or digit; `ca` is refused (it would be the CA's own files).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from replication.replica import check_replica_name

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CA_DAYS = 3650
REPLICA_DAYS = 365
SAN_URI_PREFIX = "edgestate://replica/"
FILE_MODE = 0o600
CLOCK_SKEW = dt.timedelta(hours=1)  # not_before this far back: peers with slow clocks still accept

_ID_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
MAX_DNS_NAME = 253


class CertError(Exception):
    """A one-line reason `certs init` or `certs issue` refused; nothing was written."""


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def replica_uri(replica_id: str) -> str:
    return SAN_URI_PREFIX + replica_id


def check_cert_id(replica_id: str) -> str:
    try:
        check_replica_name(replica_id)
    except ValueError as e:
        raise CertError(f"bad replica id {replica_id!r}: {e}") from None
    if not _ID_CHARS.fullmatch(replica_id):
        raise CertError(f"bad replica id {replica_id!r}: use letters, digits, '-', '_' and '.', "
                        "starting with a letter or digit (it becomes a file name and a URI)")
    if replica_id == CA_CERT.removesuffix(".pem"):
        raise CertError("bad replica id 'ca': its files would be the CA's own (ca.pem, ca.key)")
    return replica_id


def host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """The DNS and IP address SANs for `hosts` (an IP address, `[v6]` too, or a DNS name), in order,
    without repeats. Raises CertError naming the first bad one."""
    out: list[x509.GeneralName] = []
    for host in hosts:
        text = host.strip()
        name: x509.GeneralName
        try:
            name = x509.IPAddress(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
        except ValueError:
            dns = text.removesuffix(".").lower()  # "example.com." is the same name
            if len(dns) > MAX_DNS_NAME or not _DNS_NAME.fullmatch(dns):
                raise CertError(f"bad --host {host!r}: give a DNS name (letters, digits and '-' in labels "
                                "separated by dots) or an IP address") from None
            name = x509.DNSName(dns)
        if name not in out:
            out.append(name)
    return out


def init_ca(directory: Path, *, days: int = CA_DAYS, force: bool = False,
            now: dt.datetime | None = None) -> Issued:
    """Make the cluster CA in `directory` (created, mode 0700, if missing)."""
    directory = Path(directory)
    _check_days(days)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise CertError(f"cannot create {directory}: {e.strerror}") from None
    paths = Issued(directory / CA_CERT, directory / CA_KEY)
    _check_free(paths, force)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgestate cluster CA")])
    start = _now(now) - CLOCK_SKEW
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + CLOCK_SKEW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(paths, cert, key)
    return paths


def issue(directory: Path, replica_id: str, *, days: int = REPLICA_DAYS, force: bool = False,
          now: dt.datetime | None = None, hosts: Sequence[str] = ()) -> Issued:
    """Make `replica_id`'s key and certificate in `directory`, signed by the CA found there.
    `now` moves the validity window (tests make expired certificates with it); `hosts` adds
    DNS/IP SANs for serving HTTPS under those names."""
    directory = Path(directory)
    check_cert_id(replica_id)
    _check_days(days)
    extra_names = host_names(hosts)
    ca_cert, ca_key = load_ca(directory)
    paths = Issued(directory / f"{replica_id}.pem", directory / f"{replica_id}.key")
    _check_free(paths, force)
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now(now) - CLOCK_SKEW
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, replica_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + CLOCK_SKEW + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(replica_uri(replica_id)), *extra_names]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        # both: a replica accepts peer connections and makes them
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_pair(paths, cert, key)
    return paths


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = Path(directory) / CA_CERT, Path(directory) / CA_KEY
    missing = [p.name for p in (cert_path, key_path) if not p.exists()]
    if missing:
        raise CertError(f"no cluster CA in {directory} (missing {', '.join(missing)}): "
                        f"run `edgestate certs init --dir {directory}` first")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as e:
        raise CertError(f"cannot read the CA in {directory}: {e.strerror}: {e.filename}") from None
    except (ValueError, TypeError) as e:
        raise CertError(f"the CA in {directory} is not a PEM certificate and unencrypted key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertError(f"{key_path} is not the key of {cert_path}")
    return cert, key


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
                         crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise CertError(f"--days must be a whole number of at least 1, got {days!r}")


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)


def _check_free(paths: Issued, force: bool) -> None:
    """Both files, before writing either: a refusal leaves nothing half-made."""
    if force:
        return
    taken = [str(p) for p in (paths.cert, paths.key) if p.exists() or p.is_symlink()]
    if taken:
        raise CertError(f"{' and '.join(taken)} already exist{'s' if len(taken) == 1 else ''}: "
                        "pass --force to replace")


def _write_pair(paths: Issued, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    # key first: a certificate whose key was never written would be useless
    _write_new(paths.key, key_pem)
    _write_new(paths.cert, cert.public_bytes(serialization.Encoding.PEM))


def _write_new(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 from the start (O_EXCL: never through an existing file or symlink);
    an existing one is replaced by renaming a fresh file over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
    except OSError as e:
        raise CertError(f"cannot write {path}: {e.strerror}") from None
