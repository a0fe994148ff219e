"""`replication.io.tls`: the server and client contexts (TLS 1.3 only, a certificate required both
ways, several CAs for rotation) and the check that a peer's certificate names the id it claims."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from replication.io import certs, tls
from tls_handshake import handshake


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    certs.init_ca(d)
    return d


def ctx_pair(cas, made: certs.Issued):
    return tls.contexts(cas, made.cert, made.key)


def ok(outcome):
    assert not isinstance(outcome, Exception), outcome
    return outcome


def test_contexts_are_tls13_only_and_require_a_certificate_both_ways(pki):
    server, client = ctx_pair([pki / "ca.pem"], certs.issue(pki, "lhr"))
    for ctx in (server, client):
        assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert not client.check_hostname


def test_two_replicas_handshake_and_each_names_the_other(pki):
    lhr_server, _ = ctx_pair([pki / "ca.pem"], certs.issue(pki, "lhr"))
    _, fra_client = ctx_pair([pki / "ca.pem"], certs.issue(pki, "fra"))
    server, client = handshake(lhr_server, fra_client)
    peer_of_server, version = ok(server)
    assert version == "TLSv1.3"
    assert tls.check_peer(peer_of_server, "fra") == "fra"
    assert tls.check_peer(ok(client)[0], "lhr") == "lhr"


def test_a_peer_whose_certificate_names_another_id_is_refused(pki):
    # a valid cluster certificate is not enough: fra's cannot speak for lhr
    lhr_server, _ = ctx_pair([pki / "ca.pem"], certs.issue(pki, "lhr"))
    _, fra_client = ctx_pair([pki / "ca.pem"], certs.issue(pki, "fra"))
    peer, _ = ok(handshake(lhr_server, fra_client)[0])
    with pytest.raises(tls.PeerIdentityError, match="'lhr'.*'fra'"):
        tls.check_peer(peer, "lhr")


@pytest.mark.parametrize("peercert", [
    None, {}, {"subjectAltName": ()},
    {"subjectAltName": (("DNS", "lhr"),)},  # a host name is not a replica id
    {"subjectAltName": (("URI", "https://replica/lhr"),)},
    {"subjectAltName": (("URI", "edgestate://replica/lhr-2"),)},
    {"subjectAltName": (("URI", "edgestate://replica/lhr"), ("URI", "edgestate://replica/fra"))},  # ambiguous
    {"subject": ((("commonName", "lhr"),),)},  # the CN is for people, not identity
])
def test_check_peer_refuses_what_does_not_name_exactly_the_claimed_id(peercert):
    with pytest.raises(tls.PeerIdentityError):
        tls.check_peer(peercert, "lhr")


def test_two_cas_are_trusted_at_once_for_rotation_then_the_old_one_is_dropped(tmp_path, pki):
    new = tmp_path / "new"
    certs.init_ca(new)
    old_lhr, new_fra = certs.issue(pki, "lhr"), certs.issue(new, "fra")
    both = [pki / "ca.pem", new / "ca.pem"]
    # during rotation: a replica still on the old CA and one already reissued talk, both ways
    server, client = handshake(ctx_pair(both, old_lhr)[0], ctx_pair(both, new_fra)[1])
    assert tls.check_peer(ok(server)[0], "fra") and tls.check_peer(ok(client)[0], "lhr")
    server, client = handshake(ctx_pair(both, new_fra)[0], ctx_pair(both, old_lhr)[1])
    ok(server), ok(client)
    # after: the old CA dropped, a certificate it signed is refused
    new_lhr = certs.issue(new, "lhr")
    server, _ = handshake(ctx_pair([new / "ca.pem"], new_lhr)[0], ctx_pair(both, old_lhr)[1])
    assert isinstance(server, ssl.SSLCertVerificationError), server


def test_a_peer_from_a_ca_not_trusted_is_refused(tmp_path, pki):
    other = tmp_path / "other"
    certs.init_ca(other)
    server, client = handshake(ctx_pair([pki / "ca.pem"], certs.issue(pki, "lhr"))[0],
                               ctx_pair([pki / "ca.pem"], certs.issue(other, "fra"))[1])
    assert isinstance(server, ssl.SSLCertVerificationError), server
    assert isinstance(client, Exception)


def test_tls12_is_refused(pki):
    lhr_server, _ = ctx_pair([pki / "ca.pem"], certs.issue(pki, "lhr"))
    fra = certs.issue(pki, "fra")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.check_hostname = False
    old.load_verify_locations(pki / "ca.pem")
    old.load_cert_chain(fra.cert, fra.key)
    server, client = handshake(lhr_server, old)
    assert isinstance(server, ssl.SSLError) and isinstance(client, ssl.SSLError), (server, client)


def test_files_that_cannot_be_loaded_are_named_in_one_line(tmp_path, pki):
    lhr, fra = certs.issue(pki, "lhr"), certs.issue(pki, "fra")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [
        ([], lhr.cert, lhr.key, "at least one CA"),
        (pki / "ca.pem", lhr.cert, lhr.key, "at least one CA"),  # a bare path, not a list
        ([tmp_path / "missing.pem"], lhr.cert, lhr.key, "missing.pem: not found"),
        ([junk], lhr.cert, lhr.key, "junk.pem"),
        ([pki / "ca.pem"], tmp_path / "nope.pem", lhr.key, "nope.pem"),
        ([pki / "ca.pem"], junk, lhr.key, "junk.pem"),
        ([pki / "ca.pem"], lhr.cert, fra.key, "lhr.pem with key"),  # the key of another certificate
    ]
    for cas, cert, key, expect in cases:
        for make in (tls.server_context, tls.client_context):
            with pytest.raises(tls.TLSConfigError) as e:
                make(cas, cert, key)
            assert expect in str(e.value) and "\n" not in str(e.value), (expect, str(e.value))


def test_check_own_refuses_a_foreign_expired_or_misnamed_certificate(tmp_path, pki):
    import datetime as dt

    other = tmp_path / "other"
    certs.init_ca(other)
    cas = [pki / "ca.pem"]
    lhr = certs.issue(pki, "lhr")
    assert tls.check_own(cas, lhr.cert, "lhr") is None
    assert tls.check_own([other / "ca.pem", pki / "ca.pem"], lhr.cert, "lhr") is None  # rotation: either CA
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    cases = [
        (cas, certs.issue(other, "fra").cert, "fra", "not signed by the CA"),
        (cas, certs.issue(pki, "jfk", days=1, now=past).cert, "jfk", "not now"),
        (cas, lhr.cert, "fra", "names 'lhr', not this replica's id 'fra'"),
        (cas, pki / "ca.pem", "lhr", "names no replica id"),
        (cas, tmp_path / "missing.pem", "lhr", "missing.pem"),
        ([tmp_path / "gone.pem"], lhr.cert, "lhr", "gone.pem"),
    ]
    for cas_, cert, rid, expect in cases:
        with pytest.raises(tls.TLSConfigError) as e:
            tls.check_own(cas_, cert, rid)
        assert expect in str(e.value) and "\n" not in str(e.value), (expect, str(e.value))
