"""Graceful leave with real processes (issue 13; docs/cluster.md §10 "Built: graceful leave"):
three ``fechatter serve`` nodes (``tests/cluster/procs.py``) sharing the session's PostgreSQL
and NATS; the owner of two busy chats gets SIGTERM mid-traffic. It hands its chats over and
closes its streams with the reconnect hint of SPEC §10 (WebSocket 1012, SSE ``retry:`` then
the end); nothing acknowledged is lost. The streams, senders and checks are those of the
kill -9 test (``test_failover.py``), so the two runs compare. Correctness is asserted; the
seconds (takeover gap) are printed (``pytest -s``), never asserted."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.cluster.procs import NodeProc, open_node_procs
from tests.cluster.test_failover import (
    ACK_CEILING,
    ACKS_BEFORE_KILL,
    NODE_ENV,
    SENDERS,
    STREAM_ERRORS,
    TEST_CEILING,
    Clients,
    Progress,
    Traffic,
    Watcher,
    assert_every_event_once,
    assert_resumed,
    assert_stored_exactly,
    continued,
    largest_gap,
    lease_of,
    place_watchers,
    send_once,
    sentinels_seen,
    setup_chats,
    start_watchers,
    takeover_gaps,
)
from tests.nats import NatsServer
from tests.realtime.clients import RawWs, SseClient

pytestmark = pytest.mark.slow  # subprocess nodes

LEFT = re.compile(
    rb"cluster node \S+ left: (\d+) chat actors drained, (\d+) commands held, outbox (\w+)"
    rb".* in ([\d.]+) s"
)


@pytest.fixture
async def procs(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str, nats_server: NatsServer
) -> AsyncIterator[list[NodeProc]]:
    prefix = f"t{uuid.uuid4().hex[:10]}"  # the NATS server is shared by the session
    async with open_node_procs(
        nursery, tmp_path, pg_database, nats_server.url, prefix, 3, env=NODE_ENV
    ) as nodes:
        yield nodes


@pytest.fixture
async def http(procs: list[NodeProc]) -> AsyncIterator[Clients]:
    async with AsyncExitStack() as stack:
        clients = {
            node.name: await stack.enter_async_context(
                httpx.AsyncClient(base_url=node.api, timeout=ACK_CEILING)
            )
            for node in procs
        }
        yield Clients(clients)


@dataclass
class HintWatcher(Watcher):
    """A ``Watcher`` that also records how its first stream ended: ``"retry"`` (SSE: a
    ``retry:`` field, then the end of the stream), ``"close 1012 service restart"``
    (WebSocket), or what came instead."""

    ended: str = ""

    async def _next(
        self, sse: SseClient | None, socket: RawWs | None
    ) -> tuple[str | None, str, Any]:
        try:
            return await super()._next(sse, socket)
        except STREAM_ERRORS:
            if not self.ended:
                self.ended = _how_it_ended(sse, socket)
            raise


def _how_it_ended(sse: SseClient | None, socket: RawWs | None) -> str:
    if sse is not None:
        if sse.retry is not None and sse.eof and not sse.buffer:
            return "retry"
        return f"no hint (retry {sse.retry}, eof {sse.eof}, left {sse.buffer!r})"
    assert socket is not None
    if socket.closed is None:
        return "no close frame"
    return f"close {socket.closed.code} {socket.closed.reason}"


async def test_sigterm_of_a_busy_owner_hands_its_chats_over_and_its_streams_resume_elsewhere(
    procs: list[NodeProc], http: Clients, pg_database: str
) -> None:
    leaver, n2, n3 = procs
    with trio.fail_after(TEST_CEILING):
        users, chats = await setup_chats(http, leaver, n2, users=4, chats=2)
        progress = Progress()
        a, b = users[:2]
        on_leaver, on_survivors, taken = place_watchers(HintWatcher, leaver, n2, n3, users, chats)
        traffic = Traffic(http, procs, progress)
        async with trio.open_nursery() as streams:
            await start_watchers(streams, progress, on_leaver, on_survivors, n2, n3)
            for chat in chats:  # the first send takes the lease: the leaver owns both
                traffic.acks.append(await send_once(http.on(a, leaver), chat, f"hello{chat}"))
                assert (await lease_of(pg_database, chat))[0] == leaver.node_id

            async with trio.open_nursery() as senders:
                for i in range(SENDERS):
                    senders.start_soon(traffic.sender, i, users[i % 4], chats[i % 2])
                await progress.wait_for(lambda: len(traffic.acks) >= ACKS_BEFORE_KILL)
                leaver.terminate()
                termed = trio.current_time()
                # Senders keep choosing the leaver until it has exited (a load balancer
                # notices late): refused there, they retry the same client_id elsewhere.
                assert await leaver.wait() == 0
                exited = trio.current_time()
                traffic.dead.add(leaver.name)
                await progress.wait_for(lambda: continued(traffic.acks, chats, termed))
                taken.set()
                since = trio.current_time()
                await progress.wait_for(lambda: continued(traffic.acks, chats, since))
                traffic.stop.set()

            await assert_stored_exactly(http.on(a, n2), chats, traffic.acks)
            for chat in chats:  # taken by a survivor at the next epoch
                owner, epoch = await lease_of(pg_database, chat)
                assert owner in {n2.node_id, n3.node_id}
                assert epoch == 2

            final, every = await sentinels_seen(
                http.on(b, n3), http.on(a, n3), chats, on_leaver + on_survivors, progress
            )
            streams.cancel_scope.cancel()

        # The leaver's streams got the hint, reconnected to a survivor and resumed.
        for w in on_leaver:
            expected = "close 1012 service restart" if w.ws else "retry"
            assert w.ended == expected, (w.name, w.ended)
            await assert_resumed(w, chats, final, every, http.on(w.user, n2))
        for w in on_survivors:  # untouched: every event once, in seq order per chat
            assert w.broke_at is None, w.name
            assert_every_event_once(w, chats, final)

    for node in procs:  # every log is clean, the leaver's too
        assert "Traceback" not in node.text(), node.text()
        assert " ERROR " not in node.text(), node.text()
    left = LEFT.search(leaver.log)
    assert left is not None, leaver.text()
    assert left.group(3) == b"published", leaver.text()
    gaps = takeover_gaps(traffic.acks, chats, termed)
    exact = sum(w.outcome == "exact" for w in on_leaver)
    retried = sum(a.attempts > 1 for a in traffic.acks)
    delivery = max(largest_gap(w.arrivals, termed) for w in on_survivors)
    print(
        f"\nSIGTERM: {len(traffic.acks)} sends acknowledged, {retried} after a failed attempt;"
        f" failed attempts {dict(traffic.failures)}"
        "\n  takeover gap per chat (last ack before SIGTERM -> first ack of a send started"
        " after it): " + ", ".join(f"{g:.3f} s" for g in gaps.values()) + ""
        f"\n  the leave (actors drained, outbox published, row ended): {float(left.group(4)):.3f} s"
        f" with {int(left.group(1))} chat actors, {int(left.group(2))} forwarded commands held"
        f" until the release; the process exited {exited - termed:.2f} s after SIGTERM"
        f"\n  survivors' streams: longest delivery gap after SIGTERM {delivery:.3f} s"
        f"\n  leaver's streams: {len(on_leaver)} got the hint (SSE retry:, WS 1012);"
        f" {exact} exact resumes, {len(on_leaver) - exact} resyncs"
    )
