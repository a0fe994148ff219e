"""HTTPS for the HTTP API: `serve` and `replica` with `--tls-cert/--tls-key`, as real processes on
loopback, with a certificate from `certs issue --host 127.0.0.1` and the CA trusted by the client.

Also: plain HTTP to the TLS port gets nothing, /ws works over wss, bad flag combinations and bad
files are one line and exit 2 (never a traceback), and a token served in plain HTTP off loopback is
warned about at start."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app import cli
from app.processes.supervisor import edgestate_cmd, free_port
from app.replica import cli as replica_cli
from app.web import https
from replication.io import certs
from serving import serving
from test_replica_cli import ENV, _group_gone, run_replica, spawn, stop, write_secret

pytestmark = pytest.mark.timeout(120)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TOKEN = "https-test-write-token-0123456789"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    certs.init_ca(d)
    certs.issue(d, "web", hosts=["127.0.0.1", "localhost"])
    certs.issue(d, "lhr", hosts=["127.0.0.1"])
    certs.issue(d, "other")  # a key that belongs to another certificate
    return d


def trusting(pki: Path) -> ssl.SSLContext:
    """A client that trusts the cluster CA, and checks host names as every HTTPS client does."""
    return ssl.create_default_context(cafile=str(pki / "ca.pem"))


def tls_flags(pki: Path, name: str = "web") -> list[str]:
    return ["--tls-cert", str(pki / f"{name}.pem"), "--tls-key", str(pki / f"{name}.key")]


@pytest.fixture(scope="module")
def server(pki, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(log, "--pops", "lhr,syd", "--speed", "1", *tls_flags(pki), tls=trusting(pki)) as srv:
        yield srv


# ------------------------------------------------------------------ serve over HTTPS


def test_serve_over_https_answers_healthz_and_a_write_with_the_ca_trusted(server):
    with httpx.Client(base_url=server.base_url, verify=server.tls, timeout=10) as c:
        assert c.get("/healthz").json() == {"status": "ok", "replicas": 2}
        w = c.put("/api/replicas/lhr/kv/over-tls", json={"value": "secret"})
        assert w.status_code == 200, w.text
        assert c.get("/api/replicas/lhr/kv/over-tls").json()["values"] == ["secret"]
    out = server.output()
    assert "Uvicorn running on https://" in out, out
    assert "edgestate: HTTPS with" in out and "CN=web" in out, out
    assert "warning" not in out.lower(), out  # loopback, no token: nothing to warn about


def test_the_certificate_is_the_one_given_not_one_any_client_trusts(server):
    # a client without the cluster CA refuses it: the server really presents the issued certificate
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(server.base_url + "/healthz", timeout=10)


def test_plain_http_to_the_tls_port_gets_no_answer_and_the_server_carries_on(server):
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{server.host}/healthz", timeout=10)
    with pytest.raises(httpx.TransportError):
        httpx.put(f"http://{server.host}/api/replicas/lhr/kv/plain", json={"value": 1}, timeout=10)
    r = httpx.get(server.base_url + "/api/replicas/lhr/kv/plain", verify=server.tls, timeout=10)
    assert r.status_code == 404, r.text  # the plain write never arrived
    assert server.proc.poll() is None


def test_a_websocket_over_wss_receives_a_snapshot(server):
    from websockets.sync.client import connect

    assert server.ws_url.startswith("wss://")
    with connect(server.ws_url, ssl=server.tls, open_timeout=10, max_size=None) as ws:
        first = json.loads(ws.recv(timeout=10))
    assert first[0]["kind"] == "snapshot", first[0].get("kind")
    assert [r["id"] for r in first[0]["topology"]["replicas"]] == ["lhr", "syd"]


def test_the_page_asks_for_wss_when_it_was_loaded_over_https():
    # the page builds its /ws URL from its own location (no browser here: the page is unchanged)
    js = (Path(__file__).resolve().parents[1] / "app/dashboard/static/js/app.js").read_text()
    assert '(location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws"' in js


def test_serve_processes_serves_https_and_relays_to_its_replicas_over_plain_loopback(pki, tmp_path):
    """The dashboard over real replica processes: HTTPS outside; its own hop to each replica's
    HTTP stays plain on loopback (the replicas are not given the flags)."""
    from waiting import wait_for

    with serving(tmp_path / "serve.log", "--processes", "--pops", "lhr", "--data-dir", str(tmp_path / "data"),
                 *tls_flags(pki), tls=trusting(pki)) as srv:
        with httpx.Client(base_url=srv.base_url, verify=srv.tls, timeout=10) as c:
            wait_for("the replica reporting", lambda: all(
                r["status"] == "up" for r in c.get("/api/replicas").json()["replicas"]), deadline_s=60)
            w = c.put("/api/replicas/lhr/kv/relayed", json={"value": 7})
            assert w.status_code == 200, w.text
            assert c.get("/api/replicas/lhr/kv/relayed").json()["values"] == [7]


# ------------------------------------------------------------------ replica over HTTPS


def test_replica_over_https_answers_healthz_and_a_write(pki, tmp_path):
    secret = write_secret(tmp_path / "secret")
    http = free_port()
    args = ["--id", "lhr", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data"),
            "--secret-file", str(secret), "--http", f"127.0.0.1:{http}", *tls_flags(pki, "lhr")]
    proc, err = spawn(args, tmp_path)
    base = f"https://127.0.0.1:{http}"
    try:
        from waiting import wait_for

        def healthy() -> bool:
            assert proc.poll() is None, f"replica exited ({proc.returncode}):\n{err.read_text()}"
            try:
                return httpx.get(base + "/healthz", verify=trusting(pki), timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the replica's /healthz over HTTPS", healthy, deadline_s=30)
        with httpx.Client(base_url=base, verify=trusting(pki), timeout=10) as c:
            w = c.put("/api/replicas/lhr/kv/k", json={"value": 1})
            assert w.status_code == 200, w.text
            assert c.get("/api/replicas/lhr/kv/k").json()["values"] == [1]
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=10)
        assert proc.poll() is None
    finally:
        assert stop(proc) == 0, err.read_text()
    assert _group_gone(proc.pid)
    assert "HTTPS with" in err.read_text()


# ------------------------------------------------------------------ refusals: one line, exit 2


def _serve(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["serve", "--pops", "lhr", *argv])
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *phrases: str) -> None:
    assert code == 2, f"exit {code}: {err}"
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for p in phrases:
        assert p in err, (p, err)


@pytest.mark.parametrize("given, missing", [("--tls-cert", "--tls-key"), ("--tls-key", "--tls-cert")])
def test_serve_needs_both_flags_or_neither(pki, capsys, given, missing):
    code, err = _serve(capsys, given, str(pki / "web.pem"))
    assert_one_line(code, err, f"{given} needs {missing}")


def _bad_files(pki: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Each case: the flags, and what the one line must say (the file at fault is named)."""
    not_pem = tmp / "not.pem"
    not_pem.write_text("hello\n")
    encrypted = tmp / "encrypted.key"
    encrypted.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    cert, key = str(pki / "web.pem"), str(pki / "web.key")
    return {
        "missing cert": (["--tls-cert", str(tmp / "nope.pem"), "--tls-key", key], f"{tmp / 'nope.pem'}: cannot read"),
        "missing key": (["--tls-cert", cert, "--tls-key", str(tmp / "nope.key")], f"{tmp / 'nope.key'}: cannot read"),
        "cert not PEM": (["--tls-cert", str(not_pem), "--tls-key", key], f"--tls-cert {not_pem}: not a PEM"),
        "key not PEM": (["--tls-cert", cert, "--tls-key", str(not_pem)], f"--tls-key {not_pem}: not a PEM"),
        "key a cert": (["--tls-cert", cert, "--tls-key", cert], f"--tls-key {cert}: not a PEM private key"),
        "mismatched": (["--tls-cert", cert, "--tls-key", str(pki / "other.key")],
                       f"--tls-key {pki / 'other.key'} is not the key of --tls-cert {cert}"),
        "encrypted": (["--tls-cert", cert, "--tls-key", str(encrypted)], f"--tls-key {encrypted}: the key is encrypted"),
    }


@pytest.mark.parametrize("case", ["missing cert", "missing key", "cert not PEM", "key not PEM", "key a cert",
                                  "mismatched", "encrypted"])
def test_serve_refuses_bad_files_in_one_line_naming_the_file(pki, tmp_path, capsys, case):
    flags, phrase = _bad_files(pki, tmp_path)[case]
    code, err = _serve(capsys, *flags)
    assert_one_line(code, err, phrase)


@pytest.mark.skipif(IS_ROOT, reason="root reads through file permissions")
def test_an_unreadable_key_is_refused_naming_it(pki, tmp_path, capsys):
    key = tmp_path / "web.key"
    key.write_bytes((pki / "web.key").read_bytes())
    key.chmod(0)
    code, err = _serve(capsys, "--tls-cert", str(pki / "web.pem"), "--tls-key", str(key))
    assert_one_line(code, err, f"--tls-key {key}: cannot read it: Permission denied")


def test_serve_as_a_process_exits_2_with_one_line_for_a_mismatched_key(pki):
    """The real command, not `main()` in this process: what an operator sees, no traceback."""
    r = subprocess.run(edgestate_cmd("serve", "--port", str(free_port()), "--tls-cert", str(pki / "web.pem"),
                                     "--tls-key", str(pki / "other.key")),
                       capture_output=True, text=True, timeout=60, env=ENV)
    assert_one_line(r.returncode, r.stderr, "is not the key of --tls-cert")


def test_replica_refusals_are_one_line_exit_2(pki, tmp_path):
    secret = write_secret(tmp_path / "secret")
    base = ["--id", "lhr", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data"),
            "--secret-file", str(secret)]
    http = ["--http", f"127.0.0.1:{free_port()}"]
    cases = [
        ([*base, *http, "--tls-cert", str(pki / "lhr.pem")], "--tls-cert needs --tls-key"),
        ([*base, *http, "--tls-key", str(pki / "lhr.key")], "--tls-key needs --tls-cert"),
        ([*base, *tls_flags(pki, "lhr")], "they need --http HOST:PORT"),
        ([*base, *http, "--tls-cert", str(pki / "lhr.pem"), "--tls-key", str(pki / "other.key")],
         f"--tls-key {pki / 'other.key'} is not the key of --tls-cert {pki / 'lhr.pem'}"),
    ]
    for i, (args, phrase) in enumerate(cases):
        rc, err = run_replica(args, tmp_path, f"refused{i}")
        assert_one_line(rc, err, phrase)
    assert not (tmp_path / "data").exists()  # refused before anything was made


# ------------------------------------------------------------------ warnings


def test_a_token_in_plain_http_off_loopback_is_warned_about_once_at_start(pki, tmp_path):
    log = tmp_path / "serve.log"
    with serving(log, "--host", "0.0.0.0", "--pops", "lhr", "--token", TOKEN) as srv:
        out = srv.output()
    assert out.count("the token is readable by anyone on the path") == 1, out
    assert "--host 0.0.0.0 is reachable from other machines over plain HTTP" in out


@pytest.mark.parametrize("host, tokens, tls, warned", [
    ("0.0.0.0", True, False, True),
    ("10.0.0.5", True, False, True),
    ("::", True, False, True),
    ("0.0.0.0", True, True, False),  # HTTPS: the token is private
    ("127.0.0.1", True, False, False),  # loopback: nobody on the path
    ("localhost", True, False, False),
    ("::1", True, False, False),
    ("127.0.0.1", False, False, False),
])
def test_when_the_plain_http_warning_is_given(host, tokens, tls, warned):
    got = https.plain_token_warning(host, tokens=tokens, https=tls, flag="--host")
    assert (got is not None) == warned, got


def _replica_args(pki: Path, http: str, tls: bool, token: str | None = TOKEN) -> argparse.Namespace:
    return argparse.Namespace(http=(http, 8443), token=token, admin_token=None,
                              tls_cert=pki / "lhr.pem" if tls else None, tls_key=pki / "lhr.key" if tls else None)


def test_replica_warns_about_a_plain_http_token_off_loopback_only(pki, capsys):
    assert replica_cli._https(_replica_args(pki, "0.0.0.0", tls=False))[1] == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--http 0.0.0.0 is reachable from other machines over plain HTTP" in err, err
    for http, tls in (("0.0.0.0", True), ("127.0.0.1", False)):
        loaded, code = replica_cli._https(_replica_args(pki, http, tls=tls))
        assert code == 0 and (loaded is not None) == tls
        assert capsys.readouterr().err == ""


def test_an_expired_certificate_or_a_key_others_can_read_is_warned_about(pki, tmp_path):
    old = certs.issue(pki, "old", hosts=["127.0.0.1"], days=1,
                      now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30))
    loaded = https.load(old.cert, old.key)
    assert [w for w in loaded.warnings if "expired on" in w], loaded.warnings
    assert https.load(pki / "web.pem", pki / "web.key").warnings == ()
    loose = tmp_path / "loose.key"
    loose.write_bytes((pki / "web.key").read_bytes())
    loose.chmod(0o644)
    assert https.load(pki / "web.pem", loose).warnings == (f"--tls-key {loose} is readable by others (chmod 600 it)",)


def test_both_help_texts_describe_the_flags(capsys):
    texts = {}
    for command in ("serve", "replica"):
        with pytest.raises(SystemExit) as e:
            cli.main([command, "--help"])
        assert e.value.code == 0
        texts[command] = " ".join(capsys.readouterr().out.split())
    for text in texts.values():
        assert "--tls-cert FILE" in text and "--tls-key FILE" in text and "certs issue --host NAME" in text
    assert "/ws is then wss:" in texts["serve"] and "replicas' own HTTP stays plain on loopback" in texts["serve"]
    assert "not the peer links" in texts["replica"]
