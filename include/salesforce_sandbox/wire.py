"""What goes on the wire beyond the handlers: header names as Salesforce writes them, and gzip.

Starlette keeps header names lower-case, and uvicorn sends them as given. HTTP says names are
case-insensitive, but clients exist that read ``Sforce-Locator`` or ``Sforce-NumberOfRecords``
case-sensitively, so every response leaves with the casing Salesforce uses.
"""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET  # noqa: S405 - parse_xml() refuses the constructs that make it unsafe
import zlib
from email.utils import formatdate
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Names whose casing is not simply each dash-separated word capitalised.
_SPECIAL_CASE = {
    b"sforce-numberofrecords": b"Sforce-NumberOfRecords",
    b"www-authenticate": b"WWW-Authenticate",
    b"etag": b"ETag",
}
GZIP_LEVEL = 1  # result pages are large: fast compression keeps the sandbox's CPU share small


def wire_name(name: bytes) -> bytes:
    """``sforce-limit-info`` -> ``Sforce-Limit-Info``."""
    lowered = name.lower()
    special = _SPECIAL_CASE.get(lowered)
    if special is not None:
        return special
    return b"-".join(part[:1].upper() + part[1:] for part in lowered.split(b"-"))


# What Salesforce takes of a request's URI and headers together (bytes): a longer URI is answered
# 414 URI Too Long, a longer URI and headers 431 Request Header Fields Too Large.
REQUEST_HEAD_LIMIT = 16_384


class RequestHeadLimit:
    """ASGI middleware: a request whose URI, or URI and headers, pass what Salesforce takes is
    answered as Salesforce answers it (a long SOQL query sent in the URL: a re-sync naming hundreds
    of orders)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            uri = len(scope.get("raw_path") or scope["path"].encode()) + (len(scope["query_string"]) + 1 if scope.get("query_string") else 0)
            head = uri + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
            status = 414 if uri > REQUEST_HEAD_LIMIT else 431 if head > REQUEST_HEAD_LIMIT else None
            if status is not None:
                reason = b"URI Too Long" if status == 414 else b"Request Header Fields Too Large"
                await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": reason})
                return
        await self.app(scope, receive, send)


class SalesforceHeaderCase:
    """ASGI middleware: response header names in Salesforce's casing, and a ``Date`` header
    (the server is started without its own lower-case ``date`` and ``server`` headers)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_cased(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(wire_name(name), value) for name, value in message.get("headers", [])]
                headers.append((b"Date", formatdate(usegmt=True).encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_cased)


_JSON = msgspec.json.Encoder()


class RecordsJSONResponse(JSONResponse):
    """A JSONResponse rendered by msgspec, several times faster on pages of 2,000 records.

    The bytes are starlette's (compact, UTF-8 unescaped) but for floats of 1e16 and beyond or
    below 1e-4, written ``1e16`` where json.dumps writes ``1e+16``: the same number. Records
    hold finite numbers only (the store refuses NaN and infinities), which json.dumps would refuse."""

    def render(self, content: Any) -> bytes:
        return _JSON.encode(content)


def accepts_gzip(request: Request) -> bool:
    codings = request.headers.get("accept-encoding", "")
    return any(part.split(";")[0].strip().lower() == "gzip" for part in codings.split(","))


def maybe_gzip(request: Request, body: bytes, headers: dict[str, str]) -> bytes:
    """``body`` gzip-compressed when the client asked for it (``Content-Encoding`` then set)."""
    if not accepts_gzip(request):
        return body
    headers["Content-Encoding"] = "gzip"
    headers["Vary"] = "Accept-Encoding"
    return gzip.compress(body, compresslevel=GZIP_LEVEL)


def decompressed_body(request: Request, body: bytes) -> bytes:
    """The request body as sent before compression: Salesforce decompresses a request whose
    ``Content-Encoding`` is ``gzip`` or ``deflate`` before processing it (REST API "Compression
    Headers"). Raises ValueError when the body is not what the header says, or would decompress
    past the largest body Salesforce takes (Bulk 2.0's 150 MB upload)."""
    coding = request.headers.get("content-encoding", "").strip().lower()
    if not body or coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip"):
        attempts = (16 + zlib.MAX_WBITS,)
    elif coding == "deflate":
        attempts = (zlib.MAX_WBITS, -zlib.MAX_WBITS)  # zlib-wrapped, as HTTP's "deflate" means; raw, as some clients send
    else:
        raise ValueError(f"unsupported Content-Encoding: {coding}")
    for wbits in attempts:
        reader = zlib.decompressobj(wbits)
        try:
            data = reader.decompress(body, MAX_REQUEST_BYTES + 1)
        except zlib.error as exc:
            error = exc
            continue
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"the request body decompresses to more than {MAX_REQUEST_BYTES} bytes")
        if not reader.eof:
            raise ValueError(f"the request body is not complete {coding} data")
        return data
    raise ValueError(f"the request body is not valid {coding} data: {error}")


MAX_REQUEST_BYTES = 150 * 1024 * 1024


def parse_xml(body: bytes) -> ET.Element:
    """A request's XML document; raises ValueError for malformed XML. Entity and DTD declarations
    are never part of a Salesforce request: refusing them keeps the standard-library parser clear
    of entity-expansion tricks."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise ValueError("DOCTYPE and ENTITY declarations are not accepted")
    try:
        return ET.fromstring(body)  # noqa: S314 - declarations refused above
    except ET.ParseError as exc:
        raise ValueError(f"malformed XML: {exc}") from exc


def local_name(element: ET.Element) -> str:
    """``{namespace}name`` -> ``name``."""
    return element.tag.rsplit("}", 1)[-1]
