"""A bound on a request's head (request line and headers) before any of it is parsed, and the
documented error shape for what the HTTP parser itself refuses.

uvicorn's httptools protocol keeps a header, or a URL, growing for as long as its bytes come:
ten clients each sending one 16 MiB header grew `serve` by 92 MB, and every request was then
answered 200. This protocol counts a request's head as it arrives and, past `MAX_HEAD_BYTES`,
answers 431 in the documented error shape and closes the connection: memory per connection
stays under the bound plus one read. The body is not counted here (`limits.BodyLimitMiddleware`).

A request the parser cannot read (an unknown method token, a bad or conflicting Content-Length
or Transfer-Encoding, a malformed request line or header) never reaches the app; uvicorn answered
it in plain text. Here it is 400 `bad_request` in the JSON shape every other error has.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # far above any real client's head (browsers: a few KB)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        # While a head is being read, the parser is fed no more than the head may still take, so a
        # refusal comes as soon as one byte too many arrives, whatever the reads' sizes; a read
        # holding the end of one request and others after it (pipelining) is fed on.
        while data:
            if not self._in_head:
                super().data_received(data)
                return
            room = MAX_HEAD_BYTES - self._head_bytes
            if room <= 0:
                self._refuse_head()
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():
                return
            upgraded = self.transport.get_protocol()
            if upgraded is not self and data:  # a WebSocket now: the rest is its
                upgraded.data_received(data)
                return

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(b"400 Bad Request", {"error": {
            "code": "bad_request", "message": f"{msg.rstrip('.')}: not an HTTP/1.1 request this server can read"}})

    def _answer_and_close(self, status: bytes, doc: dict) -> None:
        body = orjson.dumps(doc)
        self.transport.write(b"".join([
            b"HTTP/1.1 ", status, b"\r\n",
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n", body,
        ]))
        self.transport.close()

    def _refuse_head(self) -> None:
        self._in_head = False  # whatever else arrives is dropped with the connection
        self._answer_and_close(b"431 Request Header Fields Too Large", {"error": {
            "code": "head_too_large",
            "message": f"the request line and headers exceed {MAX_HEAD_BYTES} bytes",
            "limit": {"name": "max_head_bytes", "value": MAX_HEAD_BYTES},
        }})


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for `uvicorn.Config` of every server here."""
    return {"http": BoundedHttpToolsProtocol}


__all__ = ["MAX_HEAD_BYTES", "BoundedHttpToolsProtocol", "uvicorn_options"]
