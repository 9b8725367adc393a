"""An HTTPS proxy (HTTP ``CONNECT``) that takes clients hard-coding Salesforce's login hosts to the sandbox.

Connectors such as Singer's tap-salesforce and Airbyte's source-salesforce log in at
``https://login.salesforce.com`` (or ``test.salesforce.com``) whatever their configuration says.
Their HTTP libraries honour ``HTTPS_PROXY``: pointed at this proxy, every tunnel they open to a
name the sandbox's certificate carries ends at the sandbox instead, and TLS is end to end between
the client and the sandbox (the client trusts the sandbox certificate, which names those hosts).

Whatever host is asked for, the tunnel only ever reaches the sandbox: the proxy is no way out to
anywhere else. Names the certificate does not carry are refused with 403, so a client that was not
meant to use the proxy fails clearly rather than at the TLS handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_SECONDS = 30.0
COPY_CHUNK = 64 * 1024
STARTUP_TIMEOUT_SECONDS = 10.0
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class ConnectProxy:
    """Listens on ``host:port`` (0 picks a free port) and tunnels ``CONNECT`` requests to ``target``.

    ``tunnel_hosts`` are the names a tunnel may be asked for (any port); a local name is tunnelled
    only on the sandbox's own port, so other local services are never silently replaced."""

    def __init__(self, target: tuple[str, int], tunnel_hosts: Iterable[str], host: str = "127.0.0.1", port: int = 0):
        self.target = target
        self.tunnel_hosts = frozenset(name.lower() for name in tunnel_hosts)
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(128)
        self._socket.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        """What to put in ``HTTPS_PROXY``."""
        host = self._socket.getsockname()[0]
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def start(self) -> ConnectProxy:
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name="sandbox-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT_SECONDS):
            raise RuntimeError("the sandbox proxy did not start in time")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()
        self._thread = self._loop = None

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._handle, sock=self._socket)
        self._ready.set()
        await self._stopped.wait()
        # No waiting for open tunnels (clients keep connections alive): asyncio.run cancels them.
        server.close()

    def allows(self, host: str, port: int) -> bool:
        host = host.lower()
        if host in LOCAL_NAMES:
            return host in self.tunnel_hosts and port == self.target[1]
        return host in self.tunnel_hosts

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_SECONDS)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        method, host, port = _request_target(head)
        if method != "CONNECT":
            await _answer(writer, "405 Method Not Allowed", "this proxy only tunnels HTTPS (CONNECT)\n", "Allow: CONNECT")
            return
        if host is None or not self.allows(host, port):
            message = f"the sandbox proxy tunnels only to {', '.join(sorted(self.tunnel_hosts))} (asked for {host}:{port})\n"
            await _answer(writer, "403 Forbidden", message)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            await _answer(writer, "502 Bad Gateway", f"the sandbox cannot be reached: {exc}\n")
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await _pipe_both_ways(reader, writer, upstream_reader, upstream_writer)


def _request_target(head: bytes) -> tuple[str, str | None, int]:
    """``CONNECT login.salesforce.com:443 HTTP/1.1`` -> ("CONNECT", "login.salesforce.com", 443)."""
    first_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = first_line.split(" ")
    if len(parts) != 3:
        return "", None, 0
    method, target, _ = parts
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return method, None, 0
    return method, host.strip("[]"), int(port)


async def _answer(writer: asyncio.StreamWriter, status: str, body: str, *headers: str) -> None:
    data = body.encode()
    lines = [f"HTTP/1.1 {status}", "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(data)}",
             "Connection: close", *headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


async def _pipe_both_ways(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(COPY_CHUNK):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()

    await asyncio.gather(copy(client_reader, upstream_writer), copy(upstream_reader, client_writer))
    for writer in (client_writer, upstream_writer):
        writer.close()
