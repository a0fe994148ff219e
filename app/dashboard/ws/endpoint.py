"""The `/ws` route: accept, register with the hub (which queues the snapshot), then run the
client's sender beside a receiver for its `{"select": id}` messages until either ends."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from fastapi import APIRouter, WebSocket

from .client import Client
from .hub import Hub
from .limits import MAX_MESSAGE as MAX_CLIENT_MESSAGE  # uvicorn refuses larger ones (1009) before they are read

CLOSE_TOO_SLOW = 1013  # "try again later": the client fell behind the stream


async def _receive(websocket: WebSocket, hub: Hub, client: Client) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        if data is None:
            data = message.get("bytes")
        if not data or len(data) > MAX_CLIENT_MESSAGE:  # in case a server runs without the limits
            continue
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "select" in obj:
            sel = obj["select"]
            if sel is None or (isinstance(sel, str) and hub.live.has(sel)):
                hub.select(client, sel)


async def run_client(websocket: WebSocket, client, receive, disconnect, too_slow: str) -> None:
    """Run a stream client's sender (`client.run`, its task kept as `client.sender` so a hub can
    cancel a send that hangs) beside `receive` until either ends; then `disconnect` it, and close
    with 1013 and `too_slow` if its hub dropped it for not reading. Shared by `/ws` and `/ws/join`."""
    client.sender = asyncio.create_task(client.run(websocket))
    receiver = asyncio.create_task(receive)
    try:
        await asyncio.wait({client.sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        disconnect(client)
        for task in (client.sender, receiver):
            task.cancel()
        for task in (client.sender, receiver):
            with contextlib.suppress(BaseException):
                await task
    if client.dropped:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(code=CLOSE_TOO_SLOW, reason=too_slow), 2.0)


router = APIRouter()


@router.websocket("/ws")
async def live_stream(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.ws_hub
    await websocket.accept()
    client = hub.connect()
    await run_client(websocket, client, _receive(websocket, hub, client), hub.disconnect,
                     "too slow: fell behind the stream")
