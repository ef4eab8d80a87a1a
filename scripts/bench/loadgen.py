"""A lean HTTP/1.1 load generator for the submit and latency workloads.

The runtime's own client (httpx) spends about 1.4 ms of CPU per request on this machine, as
much as the API spends serving a submit, and the load generator shares the machine's two cores
with the API, PostgreSQL and the worker: with it, the submit workloads measured the client as
much as the server. This one keeps a pool of keep-alive connections, writes each request as one
buffer and parses the answer with httptools (the parser uvicorn uses), for a small fraction of
that. Plain ``http://`` to a trusted local server only: a benchmark tool, not a client.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson


class LoadClientError(Exception):
    """The server closed the connection or answered something unparseable."""


class _Answer:
    """httptools callbacks for one response."""

    __slots__ = ("body", "done")

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.done = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer


class LoadClient:
    """``await client.post_json(path, body)`` → (status, decoded JSON); one request per
    connection at a time, connections reused while the server keeps them alive."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"LoadClient speaks plain http:// only, not {url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._host_header = f"{self._host}:{self._port}".encode()
        self._idle: list[_Connection] = []

    async def __aenter__(self) -> LoadClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.writer.close()

    async def post_json(self, path: str, body: Any) -> tuple[int, Any]:
        payload = orjson.dumps(body)
        request = b"".join(
            (
                b"POST ",
                path.encode(),
                b" HTTP/1.1\r\nhost: ",
                self._host_header,
                b"\r\ncontent-type: application/json\r\ncontent-length: ",
                str(len(payload)).encode(),
                b"\r\n\r\n",
                payload,
            )
        )
        connection = self._idle.pop() if self._idle else None
        if connection is None:
            reader, writer = await asyncio.open_connection(self._host, self._port)
            connection = _Connection(reader, writer)
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        try:
            connection.writer.write(request)
            while not answer.done:
                data = await connection.reader.read(65536)
                if not data:
                    raise LoadClientError("the server closed the connection")
                parser.feed_data(data)
        except BaseException:
            connection.writer.close()
            raise
        if parser.should_keep_alive():
            self._idle.append(connection)
        else:
            connection.writer.close()
        return parser.get_status_code(), orjson.loads(b"".join(answer.body))
