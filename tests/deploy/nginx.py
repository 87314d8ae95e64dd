"""nginx from Debian's package, run as this user under a scratch prefix, with the site of
``deploy/nginx.conf`` rendered for a test: a ``trustme`` certificate, the nodes' ports, free
ports for its own listeners. ``open_nginx`` starts it in the foreground, waits until it
answers ``/ready`` through TLS, and stops it gracefully (SIGQUIT) on the way out; its error
log must then hold nothing at ``[error]`` or worse. Test-only: never imported by ``fechatter``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

import h11
import httpx
import pytest
import trio
import trustme

from tests.pg import free_port
from tests.realtime.schema_check import check_event

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "deploy" / "nginx.conf"
START_CEILING = 20.0  # seconds until nginx answers /ready through TLS
STOP_CEILING = 20.0  # a graceful stop waits for open streams: the test closes its own first
POLL = 0.05  # seconds between /ready tries while nginx binds (a process we do not own)
# nginx's own problems: [emerg], [alert], [crit], [error]. (Upstream connect errors are
# [error]: a test that provokes one lists it.)
# A client's own fault nginx logs at [error] although it answered it as configured: a body
# over client_max_body_size (413 problem document, tests/http/test_errors_and_ops.py).
CLIENT_FAULTS = ("client intended to send too large body",)
BAD_LOG_LINE = re.compile(
    r"^\S+ \S+ \[(?:emerg|alert|crit|error)\](?!.*(?:"
    + "|".join(map(re.escape, CLIENT_FAULTS))
    + "))",
    re.M,
)


@cache
def tests_ca() -> trustme.CA:
    """The session's certificate authority: every nginx of the tests serves a certificate it
    issued, so one client context (``client_ssl_context``) trusts them all."""
    return trustme.CA()


@cache
def client_ssl_context() -> ssl.SSLContext:
    """A client ``SSLContext`` trusting ``tests_ca`` (and nothing else)."""
    context = ssl.create_default_context()
    tests_ca().configure_trust(context)
    return context


def nginx_binary() -> str:
    """The nginx executable (Debian puts it in /usr/sbin, off a user's PATH). Skipped when
    absent outside CI; in CI (``CI`` set) a missing nginx fails: .ci/run installs it."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (.ci/run installs nginx-light)")
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return found


@dataclass(frozen=True)
class Proxy:
    """A running nginx: its TLS origin, its plain-HTTP origin, a context trusting its CA."""

    url: str  # https://localhost:<port>
    http_url: str  # http://localhost:<port> (redirects)
    ssl_context: ssl.SSLContext
    error_log: Path
    access_log: Path  # the site's, in its redacting format ``fechatter``


def render_site(nodes: list[tuple[str, str]], prefix: Path, tls_port: int, http_port: int) -> str:
    """``deploy/nginx.conf`` with its placeholders filled: ``nodes`` are (API host:port,
    streams host:port) of exactly two nodes; the certificate files and the access log are
    ``prefix``'s."""
    assert len(nodes) == 2, "the template names two nodes"
    values = {
        "FECHATTER_SERVER_NAME": "localhost",
        "FECHATTER_LISTEN": f"127.0.0.1:{tls_port}",
        "FECHATTER_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "FECHATTER_TLS_CERT": str(prefix / "cert.pem"),
        "FECHATTER_TLS_KEY": str(prefix / "key.pem"),
        "FECHATTER_NGINX_ACCESS_LOG": str(prefix / "access.log"),
    }
    for i, (api, streams) in enumerate(nodes, start=1):
        values[f"FECHATTER_NODE{i}_API"] = api
        values[f"FECHATTER_NODE{i}_STREAMS"] = streams
    text = Template(SITE.read_text()).safe_substitute(values)
    # Every placeholder of ours is filled; nginx's own $variables stay.
    assert "${FECHATTER_" not in text, text
    return text


def main_config(prefix: Path, site: Path, keepalive: bool = True) -> str:
    """A whole nginx.conf around the site: foreground, files under ``prefix``, one worker.
    Without ``keepalive``, nginx closes each client connection after its response (the raw
    clients of tests/realtime read a refusal to the end of the connection)."""
    user = "user root root;\n" if os.geteuid() == 0 else ""  # else workers would be nobody
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        # The default (combined, unredacted) format to the site's file: a request the site's
        # own access_log missed would show there, its secrets for a test to find.
        f"    access_log {prefix / 'access.log'};\n{temp}\n"
        + ("" if keepalive else "    keepalive_timeout 0;\n")
        + f"    include {site};\n"
        "}\n"
    )


def prepare(
    prefix: Path, nodes: list[tuple[str, str]], tls_port: int, keepalive: bool = True
) -> tuple[list[str], Proxy]:
    """Write the certificate, the site and nginx.conf under ``prefix``; nginx's argv and the
    ``Proxy`` it will be."""
    binary = nginx_binary()
    prefix.mkdir(parents=True, exist_ok=True)
    leaf = tests_ca().issue_cert("localhost", "127.0.0.1")
    (prefix / "cert.pem").write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(prefix / "key.pem"))
    http_port = free_port()
    site = prefix / "fechatter.conf"
    site.write_text(render_site(nodes, prefix, tls_port, http_port))
    config = prefix / "nginx.conf"
    config.write_text(main_config(prefix, site, keepalive))
    proxy = Proxy(
        f"https://localhost:{tls_port}", f"http://localhost:{http_port}", client_ssl_context(),
        prefix / "error.log", prefix / "access.log",
    )  # fmt: skip
    return [binary, "-p", str(prefix), "-c", str(config), "-e", str(proxy.error_log)], proxy


@asynccontextmanager
async def open_nginx(
    prefix: Path, nodes: list[tuple[str, str]], tls_port: int | None, *, keepalive: bool = True
) -> AsyncIterator[Proxy]:
    """nginx in front of ``nodes`` on ``127.0.0.1:tls_port`` (TLS for ``localhost``; None: a
    free port of its choosing); ``keepalive`` as in ``main_config``.

    A port from ``free_port`` is free when it is picked, not when nginx binds it: another
    process may take it meanwhile (nginx: "bind() ... Address already in use", and it exits).
    Then nginx is started again on fresh ports, up to ``START_ATTEMPTS`` times — unless the
    port taken is the caller's ``tls_port``, which the caller has already handed out."""
    for attempt in range(1, START_ATTEMPTS + 1):
        argv, proxy = prepare(prefix, nodes, tls_port or free_port(), keepalive)
        with trio.fail_after(START_CEILING):
            checked = await trio.run_process([*argv, "-t"], capture_stderr=True, check=False)
        assert checked.returncode == 0, checked.stderr.decode()
        process = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL)
        if await _answers(process, proxy):
            break
        await process.wait()
        text = proxy.error_log.read_text()
        taken = BIND_TAKEN.search(text)
        retry = taken is not None and (tls_port is None or taken[1] != str(tls_port))
        assert retry, text
        assert attempt < START_ATTEMPTS, text
        proxy.error_log.unlink()  # the next attempt's log is checked on its own
    try:
        yield proxy
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGQUIT)  # graceful: finish open requests
                with trio.move_on_after(STOP_CEILING):
                    await process.wait()
            if process.returncode is None:
                process.kill()
            await process.wait()
    text = proxy.error_log.read_text()
    assert BAD_LOG_LINE.findall(text) == [], text


START_ATTEMPTS = 3
BIND_TAKEN = re.compile(r"\[emerg\].*bind\(\) to \S+:(\d+) failed \(98: Address already in use\)")


async def _answers(process: trio.Process, proxy: Proxy) -> bool:
    """Wait until nginx answers ``/ready`` through TLS (True) or has exited (False)."""
    with trio.fail_after(START_CEILING):
        async with httpx.AsyncClient(verify=proxy.ssl_context, timeout=5) as client:
            while process.returncode is None:
                try:
                    if (await client.get(f"{proxy.url}/ready")).status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                await trio.sleep(POLL)
    return False


class Tap:
    """A TCP relay in front of one node's listener, keeping the bytes each connection sent
    upstream (what nginx passes a node: ``sent``, up to ``TAP_KEEP`` bytes a connection).
    Both directions are passed on unchanged; either side's end closes both. Test-only: it
    shows what arrives at a node, which the node itself does not log."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = 0
        self.sent: list[bytearray] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free port (``port``) and relay every connection until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        kept = bytearray()
        self.sent.append(kept)
        async with (
            client,
            await trio.open_tcp_stream(*self.target) as node,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._pump, client, node, kept, nursery.cancel_scope)
            nursery.start_soon(self._pump, node, client, None, nursery.cancel_scope)

    @staticmethod
    async def _pump(
        source: trio.SocketStream,
        sink: trio.SocketStream,
        kept: bytearray | None,
        done: trio.CancelScope,
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                if kept is not None and len(kept) < TAP_KEEP:
                    kept += data[: TAP_KEEP - len(kept)]
                await sink.send_all(data)
        except trio.BrokenResourceError:
            pass
        done.cancel()


TAP_KEEP = 256 * 1024  # bytes kept per relayed connection (a head and any body behind it)


class TlsSse:
    """An EventSource over TLS through the proxy: HTTP/1.1 parsed by h11 (nginx answers a
    stream with chunked transfer coding), SSE blocks parsed from the body as it arrives."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self.http = h11.Connection(h11.CLIENT)
        self.response: h11.Response | None = None
        self.body = b""

    @classmethod
    async def connect(cls, proxy: Proxy, path: str, token: str, body: bytes = b"") -> TlsSse:
        """GET ``path`` with the token (and ``body`` with its ``Content-Length``, when given:
        a stream request should have none); returns once the response head arrived."""
        url = httpx.URL(proxy.url)
        assert url.port is not None
        tcp = await trio.open_ssl_over_tcp_stream(
            url.host, url.port, ssl_context=proxy.ssl_context, https_compatible=True
        )
        client = cls(tcp)
        request = h11.Request(
            method="GET",
            target=path,
            headers=[
                ("Host", f"{url.host}:{url.port}"),
                ("Accept", "text/event-stream"),
                ("Authorization", f"Bearer {token}"),
                *([("Content-Length", str(len(body)))] if body else []),
            ],
        )
        head = client.http.send(request)
        sent = client.http.send(h11.Data(data=body)) if body else b""
        await tcp.send_all(head + sent + client.http.send(h11.EndOfMessage()))
        while client.response is None:
            event = await client._next()
            if isinstance(event, h11.Response):
                client.response = event
        return client

    async def _next(self) -> h11.Event | type[h11.NEED_DATA]:
        while (event := self.http.next_event()) is h11.NEED_DATA:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("the proxy closed the stream")
            self.http.receive_data(bytes(data))
        assert event is not h11.PAUSED
        return event  # type: ignore[return-value]

    async def next_event(self) -> tuple[str, Any]:
        """The next (event, data) block; ``:`` comments are skipped."""
        while True:
            while b"\n\n" not in self.body:
                event = await self._next()
                if isinstance(event, h11.EndOfMessage):
                    raise EOFError("the stream ended")
                if isinstance(event, h11.Data):
                    self.body += bytes(event.data)
            block, self.body = self.body.split(b"\n\n", 1)
            fields = dict(
                line.split(": ", 1) for line in block.decode().split("\n") if ": " in line
            )
            if "event" in fields:
                data = json.loads(fields["data"])
                check_event(fields["event"], data, fields.get("id"))
                return fields["event"], data

    async def aclose(self) -> None:
        await self.stream.aclose()
