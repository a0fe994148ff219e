"""What one `/ws` connection may cost the server, and the uvicorn settings that enforce it.

Every server that serves `/ws` (`edgestate serve`, the benches, tests that run uvicorn in their
own process) builds its `uvicorn.Config` with `uvicorn_options()`, so the limits are the same
everywhere. uvicorn's defaults are for a general server, not for this stream:

- **Message size.** The client only ever sends `{"select": id}`; uvicorn accepts 16 MiB
  messages by default and buffers a whole message before the app sees it (40 clients sending
  15 MiB frames took a server from 446 MB to 1.7 GB). Here a message over `MAX_MESSAGE` bytes
  is refused from its frame header, before its payload is read: the connection is closed with
  1009 (message too big).
- **Compression.** permessage-deflate let 16 KB on the wire inflate to 16 MiB; the stream's
  frames are small and sent to many clients (each would need its own compressor). It is not
  offered: browsers connect without it.
- **Send buffer.** The kernel's send buffer autotunes up to 4 MiB per socket, so a client
  that never reads absorbed megabytes (300 of them: 1.1 GB of socket memory) before the
  hub's own queue noticed anything, and uvicorn's ping timeout closed them (1011) after
  ~40 s. Here each socket's kernel send buffer is fixed at `KERNEL_SEND_BUFFER` and the
  transport's at `WRITE_BUFFER_HIGH`: a client that does not read blocks its sender within
  a few hundred KB, and the hub drops it (1013) once a send has waited `SEND_DEADLINE_S`
  (`hub.Hub.flush`).
- **Closing a client that does not read.** A close frame queues behind what the client has
  not read, and asyncio's `close()` waits for that buffer to drain, forever if the client
  never reads. The close frame is written without waiting, and a connection still open
  `CLOSE_GRACE_S` after the app is done with it (or after a keepalive timeout) is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from .client import DEFAULT_SEND_DEADLINE_S as SEND_DEADLINE_S  # noqa: F401 (named in the docstring)
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

MAX_MESSAGE = 4096  # the largest message a client may send: `{"select": id}` needs a few dozen bytes
KERNEL_SEND_BUFFER = 64 * 1024  # SO_SNDBUF asked for (Linux doubles it for its bookkeeping)
WRITE_BUFFER_HIGH = 16 * 1024  # the transport's buffer above which a send waits
CLOSE_GRACE_S = 10.0  # after the app is done, time for the close frame to drain before an abort


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol with a bounded send buffer and closes that
    never wait on a client that does not read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
        with contextlib.suppress(AttributeError, NotImplementedError):
            self.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH, low=WRITE_BUFFER_HIGH // 4)

    async def send(self, message: Any) -> None:
        if (message["type"] == "websocket.close" and self.handshake_complete and not self.close_sent
                and self.initial_response is None and not self.writable.is_set()):
            # uvicorn's send waits for the buffer to drain first: a client that does not read
            # would never get its close frame. Queue it behind what is buffered instead (nothing
            # else is sent after a close); `on_task_complete` aborts if it never drains.
            self.writable.set()
        await super().send(message)

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        super().on_task_complete(task)
        self._abort_later()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._abort_later()

    def _abort_later(self) -> None:
        if not self.disconnected:
            self.loop.call_later(CLOSE_GRACE_S, self._abort_if_open)

    def _abort_if_open(self) -> None:
        # close() flushes first, and a client that never reads never lets the buffer flush
        if not self.disconnected and self.transport is not None:
            self.transport.abort()


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for `uvicorn.Config` of any server that serves `/ws`."""
    from ...web.http_head import uvicorn_options as head_options

    return {
        **head_options(),  # the request head bounded too: every server that serves /ws serves HTTP
        "ws": BoundedWebSocketProtocol,  # explicit: "auto" would pick whatever is installed
        "ws_max_size": MAX_MESSAGE,
        "ws_per_message_deflate": False,
        # (`ws_max_queue` is not used by this protocol: it stops reading a client after each
        # message until the app has taken it, so at most one message of MAX_MESSAGE waits)
    }
