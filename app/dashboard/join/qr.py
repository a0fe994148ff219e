"""The join URL and its QR code, for the presenter's screen.

The QR code is made here, on the server, by `segno` (pure Python, no network) as SVG: the
page shows it as an image from this server, so nothing is fetched from elsewhere.

What it encodes: `serve --public-url URL` when given (a proxy or a tunnel in front: the
address the hall can reach), else the address the request came to (its Host header, as the
presenter's browser reached this server) with `/join`. A public URL without a path (or `/`)
gets `/join` appended; one with a path is used as it is.
"""

from __future__ import annotations

import io
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

import segno

MAX_URL_CHARS = 512  # a QR code that still scans from the back of a hall


def check_public_url(text: str) -> str:
    """The URL the QR code encodes, from `--public-url`; ValueError saying what is wrong."""
    if len(text) > MAX_URL_CHARS:
        raise ValueError(f"at most {MAX_URL_CHARS} characters")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in text):
        raise ValueError("no spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError as e:
        raise ValueError(f"not a URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@): everyone in the hall can read a QR code")
    del port
    path = parts.path if parts.path not in ("", "/") else "/join"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def join_url(public_url: str | None, scheme: str, host: str | None) -> str:
    """What the QR code encodes: the public URL, or this server's `/join` as it was reached."""
    if public_url is not None:
        return public_url
    return f"{'https' if scheme in ('https', 'wss') else 'http'}://{host or 'localhost'}/join"


@lru_cache(maxsize=32)
def qr_svg(url: str) -> bytes:
    """The QR code of `url` as a standalone SVG document (dark modules on white, with the quiet zone)."""
    out = io.BytesIO()
    segno.make(url, error="m", micro=False).save(out, kind="svg", scale=8, border=4, dark="#000", light="#fff",
                                                 xmldecl=False, svgclass="join-qr", title="Scan to join")
    return out.getvalue()
