"""Which replicas `serve --attach` draws, and how to reach each: from the command line or a file.

    --attach lhr=https://10.0.0.1:8001 --attach jfk=https://10.0.0.2:8001 \\
        --attach-token T --attach-admin-token A --attach-ca ca.pem
    --attach-file cluster.toml      (or .json)

A file lists the replicas with, each, what the flags give all of them (a replica's own entry wins):

    token = "T"             # optional: defaults for every replica
    admin_token = "A"
    ca = "certs/ca.pem"     # relative to the file
    [[replica]]
    id = "lhr"
    url = "https://10.0.0.1:8001"
    token = "T-lhr"         # optional, per replica

(JSON: the same keys, `{"token": ..., "replica": [{"id": ..., "url": ...}, ...]}`.)

An id is where the map places the replica: a POP id (`lhr`), or `POP-N` for the Nth replica at
one POP (as `place_replicas` names them). Everything is checked at start, every problem named
with what to fix: an unknown POP, an id twice, a URL that is not http(s)://HOST:PORT, a CA file
that cannot be read, a token with spaces. Tokens are sent only over the URL given: an http://
URL off loopback sends it in the clear, and `serve` warns.
"""

from __future__ import annotations

import json
import re
import ssl
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from replication.geo import Placement, all_pops

_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")
_ID = re.compile(r"^(?P<pop>[a-z]{3})(?:-(?P<n>[1-9][0-9]*))?$")


@dataclass(frozen=True)
class Target:
    """One attached replica: where its HTTP API answers and what it is sent."""

    id: str
    scheme: str  # http or https
    host: str
    port: int
    token: str | None = None
    admin_token: str | None = None
    ca: Path | None = None  # trusted for https (default: the system's trust store)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client context for https (certificate and host name checked), None for http."""
        if self.scheme != "https":
            return None
        return ssl.create_default_context(cafile=str(self.ca) if self.ca else None)


def parse_url(text: str) -> tuple[str, str, int]:
    """(scheme, host, port) of `http(s)://HOST[:PORT]`, ValueError saying what is wrong."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{text!r} is not a URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text!r}: the URL must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{text!r}: the URL names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{text!r}: give the replica's address only (scheme, host, port), no path, query or "
                         "credentials (tokens go in --attach-token or the file)")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def parse_attach(text: str) -> tuple[str, str]:
    """`ID=URL` -> (id, url); ValueError otherwise."""
    rid, sep, url = text.partition("=")
    if not sep or not rid.strip() or not url.strip():
        raise ValueError(f"{text!r} is not ID=URL (for example lhr=https://10.0.0.1:8001)")
    return rid.strip(), url.strip()


def placement(rid: str) -> Placement:
    """Where the map draws replica `rid`: at the POP its id names."""
    m = _ID.match(rid)
    pops = {p.id: p for p in all_pops()}
    if m is None or m["pop"] not in pops:
        raise ValueError(f"replica id {rid!r} names no POP: the map places attached replicas by POP id "
                         f"(such as lhr, or lhr-2 for a second replica there); known: {', '.join(sorted(pops))}")
    return Placement(rid, pops[m["pop"]])


def _check_token(what: str, tok: object) -> str | None:
    if tok is None:
        return None
    if not isinstance(tok, str) or not _TOKEN_CHARS.match(tok):
        raise ValueError(f"{what} must be printable ASCII characters without spaces (and not empty)")
    return tok


def _check_ca(what: str, ca: Path | None) -> Path | None:
    if ca is None:
        return None
    try:
        ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"{what} {ca}: cannot be used as a CA: {getattr(e, 'strerror', None) or e}") from None
    return ca


def load_file(path: Path) -> dict:
    """A cluster file's contents (TOML or JSON, by its suffix), ValueError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = json.loads(raw) if path.suffix.lower() == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("replica"), list) or not data["replica"]:
        raise ValueError(f"{path}: needs a list of replicas ([[replica]] tables, each with id and url)")
    known = {"token", "admin_token", "ca", "replica"}
    extra = sorted(set(data) - known)
    if extra:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(extra)}; known: {', '.join(sorted(known))}")
    return data


def targets(attach: list[str], file: Path | None = None, *, token: str | None = None,
            admin_token: str | None = None, ca: Path | None = None) -> list[Target]:
    """Every attached replica, checked; ValueError (one message, naming what to fix) otherwise.
    A replica's own token, admin token and CA come first, then the file's, then the flags'."""
    entries: list[tuple[str, dict, dict]] = []  # (where it came from, its settings, the defaults it takes)
    flags = {"token": _check_token("--attach-token", token), "admin_token":
             _check_token("--attach-admin-token", admin_token), "ca": _check_ca("--attach-ca", ca)}
    for text in attach:
        rid, url = parse_attach(text)
        entries.append((f"--attach {text}", {"id": rid, "url": url}, flags))
    if file is not None:
        data = load_file(file)
        base = file.parent
        defaults = dict(flags)  # the file's own defaults first, for its replicas
        for k in ("token", "admin_token"):
            if k in data:
                defaults[k] = _check_token(f"{file}: {k}", data[k])
        if "ca" in data:
            defaults["ca"] = _check_ca(f"{file}: ca", base / str(data["ca"]))
        for i, r in enumerate(data["replica"]):
            if not isinstance(r, dict) or not isinstance(r.get("id"), str) or not isinstance(r.get("url"), str):
                raise ValueError(f"{file}: replica {i + 1} needs an id and a url (strings)")
            extra = sorted(set(r) - {"id", "url", "token", "admin_token", "ca"})
            if extra:
                raise ValueError(f"{file}: replica {r['id']!r}: unknown setting(s) {', '.join(extra)}")
            own = dict(r)
            if "ca" in own:
                own["ca"] = base / str(own["ca"])
            entries.append((f"{file}: replica {r['id']!r}", own, defaults))
    if not entries:
        raise ValueError("nothing to attach: give --attach ID=URL (repeatable) or --attach-file FILE")
    out: list[Target] = []
    seen: set[str] = set()
    for where, e, defaults in entries:
        rid = e["id"]
        if rid in seen:
            raise ValueError(f"{where}: replica {rid!r} is attached twice")
        seen.add(rid)
        try:
            placement(rid)
            scheme, host, port = parse_url(e["url"])
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        tok = _check_token(f"{where}: token", e["token"]) if "token" in e else defaults["token"]
        adm = _check_token(f"{where}: admin_token", e["admin_token"]) if "admin_token" in e else defaults["admin_token"]
        if scheme != "https" and "ca" in e:
            raise ValueError(f"{where}: a CA is given but {e['url']} is not https://")
        own_ca = _check_ca(f"{where}: ca", e["ca"]) if "ca" in e else defaults["ca"]
        if scheme != "https":
            own_ca = None  # the defaults' CA is for the https ones
        out.append(Target(rid, scheme, host, port, tok, adm, own_ca))
    return out


__all__ = ["Target", "load_file", "parse_attach", "parse_url", "placement", "targets"]
