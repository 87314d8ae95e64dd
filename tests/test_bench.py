"""The bench suite runs (quick sizes) so it cannot rot; it asserts completeness, not timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_bench(out: Path, timeout: float, module: str, *args: str) -> None:
    """``python -m <module> <args> --out <out>`` from the checkout (``PYTHONPATH``: the
    bench's ``fechatter serve`` processes run this checkout too); fails with its stderr."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", module, *args, "--out", str(out)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_quick_bench_delivers_everything_exactly_once(tmp_path: Path) -> None:
    run_bench(tmp_path, 300, "bench", "run", "--quick")
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {r["scenario"] for r in rows} == {
        "connections",
        "fanout",
        "throughput",
        "reconnect_storm",
        "reaction_storm",
    }
    for row in rows:
        assert row["delivered"] == row["expected"] > 0, row
        assert row.get("duplicates", 0) == 0, row
    assert (tmp_path / "results.md").read_text().count("###") == 5
    assert (tmp_path / "latency_cdf.png").stat().st_size > 1000
    assert (tmp_path / "cost.png").stat().st_size > 1000


def test_a_run_replaces_only_the_rows_of_its_scenarios() -> None:
    from bench.report import merged_rows

    previous = [
        {"scenario": "fanout", "members": 100},
        {"scenario": "fanout", "members": 1000},
        {"scenario": "reaction_storm", "streams": 10},
        {"scenario": "throughput", "chats": 1},
    ]
    new = [{"scenario": "reaction_storm", "streams": 100}, {"scenario": "connections", "n": 1}]
    assert merged_rows(previous, new) == [
        {"scenario": "fanout", "members": 100},
        {"scenario": "fanout", "members": 1000},
        {"scenario": "reaction_storm", "streams": 100},
        {"scenario": "throughput", "chats": 1},
        {"scenario": "connections", "n": 1},
    ]


@pytest.mark.slow
def test_quick_cluster_fanout_delivers_everything_exactly_once(tmp_path: Path) -> None:
    """One node, two nodes (streams on B), two nodes (half/half): every message reaches every
    stream once; with its own PostgreSQL and nats-server (~10 s)."""
    run_bench(tmp_path, 120, "bench", "run", "cluster_fanout", "--quick")
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == [
        "1 node",
        "2 nodes, streams on B",
        "2 nodes, half/half",
    ]
    for row in rows:
        assert row["delivered"] == row["expected"] > 0, row
        assert row["duplicates"] == 0, row
    assert (tmp_path / "cluster_fanout_cdf.png").stat().st_size > 1000
    assert not (tmp_path / "latency_cdf.png").exists()


@pytest.mark.slow
def test_quick_cluster_scale_delivers_everything_exactly_once(tmp_path: Path) -> None:
    """``--cluster 2``: one node, then two, each with a throughput and a fan-out phase; every
    message reaches every member's stream once, and each row names what a script reads; with
    its own PostgreSQL and nats-server (~15 s)."""
    run_bench(tmp_path, 120, "bench", "run", "--cluster", "2", "--quick")
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["scenario"], r["nodes"], r["phase"]) for r in rows] == [
        ("cluster_scale", 1, "throughput"),
        ("cluster_scale", 1, "fanout"),
        ("cluster_scale", 2, "throughput"),
        ("cluster_scale", 2, "fanout"),
    ]
    assert [r["bus"] for r in rows] == [False, False, True, True]
    for row in rows:
        assert row["delivered"] == row["expected"] > 0, row
        assert row["duplicates"] == 0, row
        assert row["messages_per_s"] > 0, row
        assert row["cpu_us_per_message_total"] > 0, row
        # Every event with a stream was timed on the server, from its commit (all nodes).
        assert row["fanout_events_timed"] >= row["messages"], row
    assert len(rows[2]["messages_per_s_by_node"].split("/")) == 2
    assert (tmp_path / "cluster_scale_cdf.png").stat().st_size > 1000


@pytest.mark.slow
def test_quick_search_bench_measures_every_query_kind(tmp_path: Path) -> None:
    """``python -m bench.search --quick``: both backends, every query kind in both orders
    found something, the index has a size and writes ran with and without it (< 60 s)."""
    run_bench(tmp_path, 120, "bench.search", "--quick")
    runs = json.loads((tmp_path / "search.json").read_text())["results"]
    assert [r["backend"] for r in runs] == ["sqlite", "postgres"]
    for run in runs:
        assert run["index_bytes"] > 0, run
        kinds = {(row["query"], row["order"]) for row in run["latency"]}
        assert len(kinds) == 12, kinds
        for row in run["latency"]:
            assert row["mean_hits"] > 0, row
        writes = run["writes"]
        assert min(writes["with_index_msgs_per_s"] + writes["without_index_msgs_per_s"]) > 0
    assert (tmp_path / "search.md").read_text().startswith("# Search bench")


@pytest.mark.slow
def test_quick_pg_plans_bench_stores_everything_and_plans_once(tmp_path: Path) -> None:
    """``python -m bench.pg_plans --quick``: every phase stored every message (the bench
    fails otherwise), and with migration 0018 the group commit's statement is planned about
    once per connection, not once per message (a count, not a timing)."""
    run_bench(tmp_path, 180, "bench.pg_plans", "--quick")
    data = json.loads((tmp_path / "pg_plans.json").read_text())
    for mode in ("plain", "outbox"):
        for variant in ("old", "new"):
            assert data[mode][variant]["cpu_us"] > 0, (mode, variant)
        new = data[mode]["new"]["statements"]
        (batch,) = [v for k, v in new.items() if k.startswith("WITH items AS")]
        calls, plans = batch[0], batch[1]
        assert calls == pytest.approx(1.0), (mode, batch)  # one call per message (batches of 1)
        assert plans < 0.5, (mode, batch)
