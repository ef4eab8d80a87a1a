"""A lean HTTP/1.1 transport for httpx: keep-alive connections over asyncio streams, responses
parsed by httptools (the C parser uvicorn uses).

httpx's default transport (httpcore, h11, anyio) was half of a busy worker's CPU: 1.4 ms of a
poll's client-side 1.5 ms on the benchmark machine, which this transport halves. It serves plain
``http://`` requests; ``https://`` and anything else go to httpx's own transport, and proxies
configured in the environment keep working because httpx routes proxied URLs to its proxy
transports before this one is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httptools
import httpx

MAX_CONNECTIONS = 64
MAX_IDLE_PER_HOST = 32
# uvicorn closes a keep-alive connection after 5 s of silence; one idle longer than this is
# dropped rather than risk writing a request into a connection the server is closing.
IDLE_SECONDS = 4.0
_FORBIDDEN_IN_HEADERS = (b"\r", b"\n", b"\x00")


class _Response:
    """httptools callbacks collecting one response."""

    __slots__ = ("body", "done", "headers", "keep_alive", "parser")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.done = False
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True
        # Only answered while the parser is still in this message.
        self.keep_alive = self.parser.should_keep_alive()


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    @property
    def reusable(self) -> bool:
        """Not closed by either side while it sat idle, and not idle for long."""
        if time.monotonic() - self.idle_since > IDLE_SECONDS:
            return False
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


def _timeout(request: httpx.Request, phase: str) -> float | None:
    value = request.extensions.get("timeout", {}).get(phase)
    return None if value is None else float(value)


class LeanTransport(httpx.AsyncBaseTransport):
    """Plain-HTTP/1.1 requests on pooled keep-alive connections; the rest to ``fallback``."""

    def __init__(self, fallback: httpx.AsyncBaseTransport | None = None) -> None:
        self._fallback = fallback or httpx.AsyncHTTPTransport()
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if (
            url.scheme != "http"
            or request.method == "HEAD"  # its answer has no body, whatever its length says
            or "transfer-encoding" in request.headers  # a streamed body, sent in chunks
        ):
            return await self._fallback.handle_async_request(request)
        key = (url.host, url.port or 80)
        payload = await request.aread()
        head = [request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            if any(bad in name or bad in value for bad in _FORBIDDEN_IN_HEADERS):
                raise httpx.LocalProtocolError(f"illegal character in header {name!r}")
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        message = b"".join(head) + payload
        async with self._slots:
            connection = await self._checkout(key, request)
            try:
                status, answer = await self._exchange(connection, message, request)
            except BaseException:
                connection.close()
                raise
        return httpx.Response(
            status,
            headers=answer.headers,
            content=b"".join(answer.body),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _checkout(self, key: tuple[str, int], request: httpx.Request) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.reusable:
                return connection
            connection.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*key), _timeout(request, "connect")
            )
        except TimeoutError as error:
            raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]} timed out") from error
        except OSError as error:
            raise httpx.ConnectError(f"{type(error).__name__}: {error}") from error
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, message: bytes, request: httpx.Request
    ) -> tuple[int, _Response]:
        answer = _Response()
        parser = answer.parser
        try:
            connection.writer.write(message)
            await asyncio.wait_for(connection.writer.drain(), _timeout(request, "write"))
        except TimeoutError as error:
            raise httpx.WriteTimeout("sending the request timed out") from error
        except OSError as error:
            raise httpx.WriteError(f"{type(error).__name__}: {error}") from error
        read_timeout = _timeout(request, "read")
        while not answer.done:
            try:
                data = await asyncio.wait_for(connection.reader.read(65536), read_timeout)
            except TimeoutError as error:
                raise httpx.ReadTimeout("waiting for the response timed out") from error
            except OSError as error:
                raise httpx.ReadError(f"{type(error).__name__}: {error}") from error
            if not data:
                raise httpx.RemoteProtocolError("server disconnected without sending a response")
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as error:
                raise httpx.RemoteProtocolError(f"malformed response: {error}") from error
        key = (request.url.host, request.url.port or 80)
        idle = self._idle.setdefault(key, [])
        if answer.keep_alive and not self._closed and len(idle) < MAX_IDLE_PER_HOST:
            connection.idle_since = time.monotonic()
            idle.append(connection)
        else:
            connection.close()
        return parser.get_status_code(), answer

    async def aclose(self) -> None:
        self._closed = True  # requests still in flight close their connections when done
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                with contextlib.suppress(Exception):
                    connection.close()
        await self._fallback.aclose()
