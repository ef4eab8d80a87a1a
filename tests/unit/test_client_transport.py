"""The client's HTTP/1.1 transport against a scripted socket server: keep-alive, a server that
closes, chunked and compressed bodies, timeouts and garbage, each as httpx reports them."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import orjson
import pytest

from oris.client import OrisClient
from oris.client.http import ServerUnreachable
from oris.client.transport import LeanTransport
from oris.config import ClientSettings

Reply = Callable[[bytes], bytes | None]  # request bytes -> raw response (None: say nothing)


def envelope(data: object, *, close: bool = False, chunked: bool = False) -> bytes:
    body = orjson.dumps({"data": data, "request_id": "r", "meta": {"status": "ok"}})
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    if close:
        head += b"connection: close\r\n"
    if chunked:
        half = len(body) // 2
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])
        )
        return head + b"transfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


class ScriptedServer:
    """Answers each request on a connection with ``reply``; counts connections."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.reply(request)
                if answer is None:
                    await asyncio.sleep(3600)
                writer.write(answer or b"")
                await writer.drain()
                if b"connection: close" in (answer or b""):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


Serve = Callable[[Reply], Awaitable[ScriptedServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> ScriptedServer:
        scripted = ScriptedServer(reply)
        scripted.server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
        servers.append(scripted.server)
        return scripted

    yield start
    for server in servers:
        server.close()


def client(url: str, timeout: float = 5.0) -> OrisClient:
    return OrisClient(ClientSettings(server_url=url, request_timeout_seconds=timeout))


async def test_requests_reuse_one_keep_alive_connection(serve: Serve) -> None:
    server = await serve(lambda request: envelope({"n": len(request)}))
    async with client(server.url) as api:
        for index in range(5):
            data = await api.request("POST", "/v1/things", json={"index": index})
            assert data["n"] > 0
        assert (await api.request("GET", "/v1/things", params={"q": "a b"}))["n"] > 0
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/things HTTP/1.1\r\n")
    assert b"\r\ncontent-type: application/json\r\n" in first.lower()
    assert first.endswith(b'{"index":0}')
    assert server.requests[-1].startswith(b"GET /v1/things?q=a+b HTTP/1.1\r\n")


async def test_a_connection_the_server_closed_is_replaced(serve: Serve) -> None:
    server = await serve(lambda _: envelope("ok", close=True))
    async with client(server.url) as api:
        assert await api.request("GET", "/a") == "ok"
        await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
        assert await api.request("GET", "/b") == "ok"
    assert server.connections == 2


async def test_chunked_and_gzip_bodies_are_decoded(serve: Serve) -> None:
    def reply(request: bytes) -> bytes:
        if request.startswith(b"GET /gzip"):
            body = gzip.compress(orjson.dumps({"data": "zipped"}))
            return (
                b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n"
                % len(body)
                + body
            )
        return envelope({"big": "x" * 5000}, chunked=True)

    server = await serve(reply)
    async with client(server.url) as api:
        assert (await api.request("GET", "/chunked"))["big"] == "x" * 5000
        assert await api.request("GET", "/gzip") == "zipped"


async def test_silence_is_a_read_timeout_and_the_api_unreachable(
    serve: Serve,
) -> None:
    server = await serve(lambda _: None)
    async with client(server.url, timeout=0.2) as api:
        with pytest.raises(ServerUnreachable, match="ReadTimeout"):
            await api.request("GET", "/slow")


async def test_refused_connections_and_garbage_are_transport_errors(
    serve: Serve,
) -> None:
    server = await serve(lambda _: b"NOT HTTP AT ALL\r\n\r\n")
    async with client(server.url) as api:
        with pytest.raises(ServerUnreachable, match="RemoteProtocolError"):
            await api.request("GET", "/garbage")
    assert server.server is not None
    port = server.server.sockets[0].getsockname()[1]
    server.server.close()
    await server.server.wait_closed()
    async with client(f"http://127.0.0.1:{port}") as api:
        with pytest.raises(ServerUnreachable, match="ConnectError"):
            await api.request("GET", "/gone")


async def test_a_cancelled_request_does_not_leave_its_connection_for_reuse(
    serve: Serve,
) -> None:
    server = await serve(lambda request: None if b"/hang" in request else envelope("ok"))
    transport = LeanTransport()
    async with httpx.AsyncClient(base_url=server.url, transport=transport) as http:
        task = asyncio.create_task(http.get("/hang"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # A late answer to /hang must not be read as the answer to the next request.
        assert (await http.get("/next")).json()["data"] == "ok"
    assert server.connections == 2


async def test_header_values_cannot_smuggle_headers(serve: Serve) -> None:
    server = await serve(lambda _: envelope("ok"))
    async with httpx.AsyncClient(base_url=server.url, transport=LeanTransport()) as http:
        with pytest.raises(httpx.LocalProtocolError):
            await http.get("/x", headers={"traceparent": "00-1\r\nx-admin: yes"})
    assert server.requests == []


async def test_a_connection_idle_past_the_servers_keep_alive_is_not_reused(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("oris.client.transport.IDLE_SECONDS", 0.0)
    server = await serve(lambda _: envelope("ok"))
    async with client(server.url) as api:
        assert await api.request("GET", "/a") == "ok"
        await asyncio.sleep(0.01)
        assert await api.request("GET", "/b") == "ok"
    assert server.connections == 2
