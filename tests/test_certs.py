"""`edgestate certs init|issue`: the files, their modes, the identity in the SAN, and that what it
issues is what Python's `ssl` accepts (and refuses) in a TLS 1.3 handshake with mutual authentication."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from app.cli import main
from replication.io import certs
from tls_handshake import handshake, san_uris

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["certs", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    certs.init_ca(d)
    return d


# ---------------------------------------------------------------- files and modes


def test_init_and_issue_write_the_named_files_with_mode_0600_from_creation(tmp_path, capsys, monkeypatch):
    # umask 0 and no chmod allowed: the 0600 can only come from the mode the files were created with
    old = os.umask(0)
    monkeypatch.setattr(os, "chmod", _no_chmod)
    monkeypatch.setattr(os, "fchmod", _no_chmod)
    try:
        d = tmp_path / "pki"
        code, out, err = run(capsys, "init", "--dir", str(d))
        assert (code, err) == (0, ""), err
        code, out, err = run(capsys, "issue", "--dir", str(d), "--id", "lhr")
        assert (code, err) == (0, ""), err
    finally:
        os.umask(old)
    assert "lhr.pem" in out and "lhr.key" in out
    names = sorted(p.name for p in d.iterdir())
    assert names == ["ca.key", "ca.pem", "lhr.key", "lhr.pem"]  # and no temporary file left behind
    for name in names:
        assert mode(d / name) == 0o600, name
    assert mode(d) == 0o700
    assert b"PRIVATE KEY" in (d / "lhr.key").read_bytes()
    assert b"PRIVATE KEY" not in (d / "lhr.pem").read_bytes()


def _no_chmod(*a, **k):
    raise AssertionError("modes must be set when the file is created, not changed afterwards")


def test_help_names_the_files(capsys):
    for argv in (["certs", "--help"], ["certs", "init", "--help"], ["certs", "issue", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in ("DIR/ca.pem", "DIR/ca.key", "DIR/ID.pem", "DIR/ID.key", "0600", "edgestate://replica/ID"):
        assert name in text, name


# ---------------------------------------------------------------- what the certificates say


def test_replica_certificate_names_its_id_in_a_uri_san_and_is_signed_by_the_ca(ca_dir):
    made = certs.issue(ca_dir, "lhr")
    cert = x509.load_pem_x509_certificate(made.cert.read_bytes())
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["edgestate://replica/lhr"]
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)


def test_validity_is_a_year_for_a_replica_ten_for_the_ca_and_days_sets_it(ca_dir, capsys):
    def days(path: Path) -> float:
        c = x509.load_pem_x509_certificate(path.read_bytes())
        return (c.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400

    assert 3649 < days(ca_dir / "ca.pem") <= 3650
    assert 364 < days(certs.issue(ca_dir, "lhr").cert) <= 365
    code, _, err = run(capsys, "issue", "--dir", str(ca_dir), "--id", "fra", "--days", "30")
    assert code == 0, err
    assert 29 < days(ca_dir / "fra.pem") <= 30


# ---------------------------------------------------------------- a TLS 1.3 handshake with mutual auth


def _server_ctx(ca: Path, made: certs.Issued) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(made.cert, made.key)
    return ctx


def _client_ctx(ca: Path, made: certs.Issued | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # peers are dialled by address; the id is in the URI SAN
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
    if made is not None:
        ctx.load_cert_chain(made.cert, made.key)
    return ctx


def test_two_issued_certificates_complete_a_mutual_tls13_handshake(ca_dir):
    lhr, fra = certs.issue(ca_dir, "lhr"), certs.issue(ca_dir, "fra")
    server, client = handshake(_server_ctx(ca_dir / "ca.pem", lhr), _client_ctx(ca_dir / "ca.pem", fra))
    assert not isinstance(server, Exception), server
    assert not isinstance(client, Exception), client
    assert server[1] == client[1] == "TLSv1.3"
    assert san_uris(server[0]) == ["edgestate://replica/fra"]  # the server saw the client's identity
    assert san_uris(client[0]) == ["edgestate://replica/lhr"]


def test_the_server_requires_a_client_certificate(ca_dir):
    lhr = certs.issue(ca_dir, "lhr")
    server, client = handshake(_server_ctx(ca_dir / "ca.pem", lhr), _client_ctx(ca_dir / "ca.pem", None))
    assert isinstance(server, ssl.SSLError), server
    assert isinstance(client, Exception), client


def test_a_certificate_from_another_ca_is_refused_either_way(tmp_path, ca_dir):
    other = tmp_path / "other"
    certs.init_ca(other)
    lhr, stranger = certs.issue(ca_dir, "lhr"), certs.issue(other, "fra")
    server, client = handshake(_server_ctx(ca_dir / "ca.pem", lhr), _client_ctx(ca_dir / "ca.pem", stranger))
    assert isinstance(server, ssl.SSLError), server  # a client with a foreign certificate
    assert isinstance(client, Exception), client
    server, client = handshake(_server_ctx(other / "ca.pem", stranger), _client_ctx(ca_dir / "ca.pem", lhr))
    assert isinstance(client, ssl.SSLCertVerificationError), client  # a server with a foreign certificate
    assert isinstance(server, Exception), server


def test_an_expired_certificate_is_refused(ca_dir):
    lhr = certs.issue(ca_dir, "lhr")
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    expired = certs.issue(ca_dir, "fra", days=1, now=past)  # valid for a day, three days ago
    assert x509.load_pem_x509_certificate(expired.cert.read_bytes()).not_valid_after_utc < past + dt.timedelta(days=2)
    server, client = handshake(_server_ctx(ca_dir / "ca.pem", lhr), _client_ctx(ca_dir / "ca.pem", expired))
    assert isinstance(server, ssl.SSLCertVerificationError), server
    assert "expired" in str(server)
    server, client = handshake(_server_ctx(ca_dir / "ca.pem", expired), _client_ctx(ca_dir / "ca.pem", lhr))
    assert isinstance(client, ssl.SSLCertVerificationError) and "expired" in str(client), client


# ---------------------------------------------------------------- refusals


def test_existing_files_are_refused_without_force_and_replaced_with_it(ca_dir, capsys):
    ca_before = (ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca.key").read_bytes()
    code, _, err = run(capsys, "init", "--dir", str(ca_dir))
    assert code == 2 and "already exist" in err and "--force" in err and err.count("\n") == 1, err
    assert ((ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca.key").read_bytes()) == ca_before

    assert run(capsys, "issue", "--dir", str(ca_dir), "--id", "lhr")[0] == 0
    before = (ca_dir / "lhr.pem").read_bytes(), (ca_dir / "lhr.key").read_bytes()
    code, _, err = run(capsys, "issue", "--dir", str(ca_dir), "--id", "lhr")
    assert code == 2 and "lhr.pem" in err and "--force" in err and err.count("\n") == 1, err
    assert ((ca_dir / "lhr.pem").read_bytes(), (ca_dir / "lhr.key").read_bytes()) == before

    # one of the two present is enough to refuse, and the other is not written either
    (ca_dir / "lhr.pem").unlink()
    assert run(capsys, "issue", "--dir", str(ca_dir), "--id", "lhr")[0] == 2
    assert not (ca_dir / "lhr.pem").exists() and (ca_dir / "lhr.key").read_bytes() == before[1]

    code, _, err = run(capsys, "issue", "--dir", str(ca_dir), "--id", "lhr", "--force")
    assert code == 0, err
    assert (ca_dir / "lhr.key").read_bytes() != before[1]
    assert mode(ca_dir / "lhr.key") == mode(ca_dir / "lhr.pem") == 0o600
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.key", "ca.pem", "lhr.key", "lhr.pem"]


def test_issue_without_a_ca_is_refused_naming_the_fix(tmp_path, capsys):
    code, _, err = run(capsys, "issue", "--dir", str(tmp_path), "--id", "lhr")
    assert code == 2 and err.count("\n") == 1, err
    assert "ca.pem" in err and "certs init" in err
    assert list(tmp_path.iterdir()) == []


def test_a_key_that_is_not_the_cas_is_refused(tmp_path, ca_dir, capsys):
    other = tmp_path / "other"
    certs.init_ca(other)
    (ca_dir / "ca.key").write_bytes((other / "ca.key").read_bytes())
    code, _, err = run(capsys, "issue", "--dir", str(ca_dir), "--id", "lhr")
    assert code == 2 and "is not the key of" in err, err
    (ca_dir / "ca.pem").write_bytes(b"not a certificate\n")
    code, _, err = run(capsys, "issue", "--dir", str(ca_dir), "--id", "lhr")
    assert code == 2 and "not a PEM" in err and err.count("\n") == 1, err
    assert not (ca_dir / "lhr.key").exists()


@pytest.mark.parametrize("bad", ["", "a/b", "../x", ".hidden", "lhr~1", "l h r", "x" * 65, "ca", "é"])
def test_bad_replica_ids_are_refused_and_nothing_is_written(ca_dir, capsys, bad):
    code, _, err = run(capsys, "issue", "--dir", str(ca_dir), "--id", bad)
    assert code == 2 and "bad replica id" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.key", "ca.pem"]


def test_the_longest_id_the_replica_accepts_is_issued(ca_dir):
    rid = "a" * 64
    made = certs.issue(ca_dir, rid)
    assert made.cert.name == rid + ".pem"


def test_a_directory_that_cannot_be_made_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    code, _, err = run(capsys, "init", "--dir", str(f / "pki"))
    assert code == 2 and "cannot create" in err and err.count("\n") == 1, err


@pytest.mark.skipif(IS_ROOT, reason="root writes through directory permissions")
def test_an_unwritable_directory_is_refused(ca_dir, capsys):
    ca_dir.chmod(0o500)
    try:
        code, _, err = run(capsys, "issue", "--dir", str(ca_dir), "--id", "lhr")
    finally:
        ca_dir.chmod(0o700)
    assert code == 2 and "cannot write" in err and err.count("\n") == 1, err


def test_a_write_that_fails_is_reported_in_one_line(ca_dir, capsys, monkeypatch):
    # stands in for a full disk or a read-only mount (root ignores directory modes)
    real_open = os.open

    def failing_open(path, flags, mode=0o777, *a, **k):
        if flags & os.O_CREAT:
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, flags, mode, *a, **k)

    monkeypatch.setattr(os, "open", failing_open)
    code, _, err = run(capsys, "issue", "--dir", str(ca_dir), "--id", "lhr")
    assert code == 2 and "cannot write" in err and "Read-only" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.key", "ca.pem"]


def test_days_must_be_at_least_one(ca_dir, capsys):
    with pytest.raises(SystemExit) as e:
        main(["certs", "issue", "--dir", str(ca_dir), "--id", "lhr", "--days", "0"])
    assert e.value.code == 2
    assert "--days" in capsys.readouterr().err
    with pytest.raises(certs.CertError):
        certs.issue(ca_dir, "lhr", days=0)


# ---------------------------------------------------------------- names for HTTPS (--host)


def test_hosts_add_dns_and_ip_names_beside_the_replica_id(ca_dir, capsys):
    code, _, err = run(capsys, "issue", "--dir", str(ca_dir), "--id", "lhr", "--host", "127.0.0.1",
                       "--host", "Edge.Example.com.", "--host", "[::1]", "--host", "edge.example.com")
    assert (code, err) == (0, ""), err
    cert = x509.load_pem_x509_certificate((ca_dir / "lhr.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["edgestate://replica/lhr"]
    assert san.get_values_for_type(x509.DNSName) == ["edge.example.com"]  # one name, however written
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    # and an HTTPS client that trusts the CA accepts it for those names, by the usual host name check
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(ca_dir / "lhr.pem", ca_dir / "lhr.key")
    client = ssl.create_default_context(cafile=ca_dir / "ca.pem")
    _, got = handshake(server, client, server_hostname="edge.example.com")
    assert not isinstance(got, Exception), got
    _, refused = handshake(server, client, server_hostname="other.example.com")
    assert isinstance(refused, ssl.SSLCertVerificationError), refused


@pytest.mark.parametrize("bad", ["", "a..b", "-x.com", "x_y.com", "a b", "é.com", "a/b", "x" * 64 + ".com"])
def test_bad_hosts_are_refused_and_nothing_is_written(ca_dir, capsys, bad):
    code, _, err = run(capsys, "issue", "--dir", str(ca_dir), "--id", "lhr", f"--host={bad}")
    assert code == 2 and "bad --host" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.key", "ca.pem"]
