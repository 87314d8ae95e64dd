"""The server times each committed event's fan-out (``fechatter_fanout_seconds``): from its
commit, and from the hub, to its bytes handed to the kernel for every local stream. One
process here; across nodes in ``tests/cluster/test_fanout_times_across_nodes.py``."""

from __future__ import annotations

import math
import re

import pytest
import trio

from fechatter.app import ServerInfo
from fechatter.metrics import FANOUT_BOUNDS, FanoutTimes, bucket_quantile
from tests.conftest import Api, make_chat, make_workspace
from tests.realtime.clients import SseClient

_COUNT = re.compile(r'^fechatter_fanout_seconds_(count|sum)\{stage="(\w+)"\} (\S+)$', re.M)


async def fanout_metrics(api: Api) -> dict[str, float]:
    """``{"commit_count": …, "commit_sum": …, "hub_count": …, "hub_sum": …}`` from /metrics."""
    text = (await api.get("/metrics")).text
    return {f"{stage}_{kind}": float(v) for kind, stage, v in _COUNT.findall(text)}


@pytest.mark.single_process(
    reason=(
        "reads /metrics of the node that answers HTTP; in the cluster modes the streams are "
        "on node 2, which times the fan-out (tests/cluster/test_fanout_times_across_nodes.py)"
    )
)
@pytest.mark.direct_listener(
    reason="reads /metrics through the API origin; the proxy hides /metrics (deploy/nginx.conf)"
)
async def test_a_delivered_message_is_timed_from_its_commit(server: ServerInfo, api: Api) -> None:
    a, b = await api.signup(), await api.signup()
    ws = await make_workspace(a, b)
    chat = await make_chat(a, ws, "Single", b)
    with trio.fail_after(10):
        # Nobody online: nothing handed to a socket, nothing timed.
        assert (await a.api.post(f"/api/chats/{chat}/messages", json={"content": "x"})).is_success
        before = await fanout_metrics(api)
        assert before == {"commit_count": 0, "commit_sum": 0, "hub_count": 0, "hub_sum": 0}
        sse = await SseClient.connect(server.realtime_url, b.api.token)
        await sse.next_of("ready")
        # Typing commits nothing: delivered, not timed.
        assert (await a.api.post(f"/api/chats/{chat}/typing")).is_success
        await sse.next_of("typing")
        assert await fanout_metrics(api) == before
        r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": "timed"})
        assert r.status_code == 201
        await sse.next_of("message.created")
        after = await fanout_metrics(api)
        assert (after["commit_count"], after["hub_count"]) == (1, 1)
        # From the commit includes from the hub; both well under the test's ceiling.
        assert 0 < after["hub_sum"] <= after["commit_sum"] < 10
        await sse.aclose()


def test_quantiles_from_bucket_counts_are_within_one_step() -> None:
    times = FanoutTimes()
    assert math.isnan(bucket_quantile(times.commit, 0.5))
    samples = [0.001 * k for k in range(1, 101)]  # 1 ms … 100 ms
    for s in samples:
        times.observe(s / 10, s)
    assert sum(times.commit) == sum(times.hub) == 100
    assert math.isclose(times.commit_sum, sum(samples))
    step = 2**0.25
    for q, true in ((0.5, 0.050), (0.99, 0.099), (1.0, 0.100)):
        got = bucket_quantile(times.commit, q)
        assert true / step <= got <= true * step, (q, got)
        assert true / 10 / step <= bucket_quantile(times.hub, q) <= true / 10 * step
    # Beyond the last bound: the +Inf bucket, read as that bound; negative ages: first bucket.
    late = FanoutTimes()
    late.observe(-0.5, 1000.0)
    assert late.hub[0] == 1
    assert bucket_quantile(late.commit, 0.5) == FANOUT_BOUNDS[-1]
