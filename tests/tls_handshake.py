"""One loopback TLS handshake between two `ssl` contexts, for the certificate and TLS tests."""

from __future__ import annotations

import socket
import ssl
import threading


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str | None = None):
    """One loopback TCP connection; returns (server outcome, client outcome), each the peer's
    certificate dict and TLS version, or the exception raised. The server reads one byte after
    its handshake so a refusal of the client's certificate reaches the client too. `server_hostname`:
    the name a client that checks host names expects."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    result: dict[str, object] = {}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(20)
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                result["server"] = (s.getpeercert(), s.version())
                s.sendall(b"k")
        except Exception as e:  # noqa: BLE001 - the outcome under test
            result["server"] = e

    t = threading.Thread(target=serve)
    t.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=20) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as c:
                peer = (c.getpeercert(), c.version())
                if c.recv(1) != b"k":  # TLS 1.3: the server's verdict on our certificate comes after ours
                    raise ConnectionError("closed by the server")
                result["client"] = peer
    except Exception as e:  # noqa: BLE001
        result["client"] = e
    finally:
        t.join(30)
        listener.close()
    assert not t.is_alive()
    return result["server"], result["client"]


def san_uris(peercert: dict) -> list[str]:
    return [v for kind, v in peercert.get("subjectAltName", ()) if kind == "URI"]
