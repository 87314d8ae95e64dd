"""The Grafana dashboard (issue 18, ``docs/grafana-dashboard.json``): every series a panel or a
variable queries exists in a live server's ``/metrics`` with the labels the query uses, and
every family ``/metrics`` exports is on some panel.

The live server is this suite's ``server`` fixture after a sign-up, a send and a stream (a
labelled family has no samples until used). There are no cluster-only series: the cluster row
shows the same families per node (``instance``), so one process exports all of them.
Prometheus adds ``up`` and the target labels ``job`` and ``instance`` at scrape time; those
are the only names the test accepts without finding them in ``/metrics``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from fechatter.app import ServerInfo
from tests.conftest import Api, make_chat, make_workspace
from tests.realtime.clients import SseClient

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
SCRAPE_SERIES = {"up"}  # Prometheus' own per-target series
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped sample
SERIES = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}|\b(fechatter_\w+)\b")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
BY = re.compile(r"\bby\s*\(([^)]*)\)")


def queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["query"]["query"])
    return found


def used_series(expr: str) -> dict[str, set[str]]:
    """Series name → label names the expression filters or groups it by (``by`` applies to
    every series of the expression: each of ours has one series)."""
    grouped = {label.strip() for labels in BY.findall(expr) for label in labels.split(",")}
    series: dict[str, set[str]] = {}
    for name, matchers, bare in SERIES.findall(expr):
        if bare:
            series.setdefault(bare, set())
        else:
            series.setdefault(name, set()).update(MATCHER.findall(matchers))
    for labels in series.values():
        labels.update(grouped - {""})
    return series


async def live_metrics(server: ServerInfo, api: Api) -> dict[str, set[str]]:
    """Sample name → label names, from ``/metrics`` after traffic on every part."""
    me, you = await api.signup(), await api.signup()
    chat = await make_chat(me, await make_workspace(me, you), "Single", you)
    stream = await SseClient.connect(server.realtime_url, you.api.token)
    try:
        await stream.next_of("ready")
        r = await me.api.post(f"/api/chats/{chat}/messages", json={"content": "hi"})
        assert r.status_code == 201, r.text
        await stream.next_of("message.created")
        async with httpx.AsyncClient(base_url=server.api_url, timeout=10) as client:
            text = (await client.get("/metrics")).text
    finally:
        await stream.aclose()
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def test_the_dashboard_queries_only_named_series() -> None:
    exprs = queries()
    assert len(exprs) > 20
    for expr in exprs:
        assert used_series(expr), expr


async def test_every_queried_series_and_label_exists_in_metrics(
    server: ServerInfo, api: Api
) -> None:
    with trio.fail_after(30):
        exported = await live_metrics(server, api)
    missing: list[str] = []
    for expr in queries():
        for name, labels in used_series(expr).items():
            if name in SCRAPE_SERIES:
                continue
            if name not in exported:
                missing.append(f"{name} (in {expr})")
            elif unknown := labels - exported[name] - TARGET_LABELS:
                missing.append(f"{name} labels {sorted(unknown)} (in {expr})")
    assert missing == []
    # And the other way: no family of /metrics is left off the dashboard.
    used = {name for expr in queries() for name in used_series(expr)}
    families = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in exported}
    shown = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in used}
    assert {f.removesuffix("_total") for f in families} - shown == set()
