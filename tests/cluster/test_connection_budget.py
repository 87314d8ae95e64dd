"""The PostgreSQL connection budget of a cluster (docs/cluster.md §6): every node counts
``database_pool_size + 2`` connections; a node that starts while the live nodes' pools could
together exceed what the server allows logs an ERROR naming the fix (it does not refuse to
start: pools connect on demand, and the start-time shrink only sees connections in use)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from fechatter.storage.postgres import SPARE_CONNECTIONS, ConnectionBudget
from tests.cluster.harness import open_cluster_harness
from tests.nats import NatsServer
from tests.serverlog import LogWatch

START_CEILING = 30.0


def test_the_budget_counts_pool_plus_two_per_node() -> None:
    budget = ConnectionBudget(max_connections=100, reserved=3)  # 97 for clients
    room = 97 - SPARE_CONNECTIONS  # 92
    assert budget.cluster_overcommitted(4, room // 4 - 2) is None  # 4 x 23 = 92
    problem = budget.cluster_overcommitted(4, room // 4 - 1)  # 4 x 24 = 96
    assert problem is not None
    assert "database_pool_size 22" in problem
    assert "at most 21" in problem
    assert budget.cluster_overcommitted(1, 20) is None


@pytest.mark.expect_log_errors(
    r"cluster nodes with database_pool_size 150 may hold", reason="the budget is exceeded"
)
async def test_a_node_joining_an_overcommitted_cluster_logs_the_fix(
    nursery: trio.Nursery,
    tmp_path: Path,
    pg_database: str,
    nats_server: NatsServer,
    server_log: LogWatch,
) -> None:
    # The test server allows 300 connections (tests/pg.py): one node of 150 fits, two
    # (2 x 152) do not. Each pool is small at start (it connects on demand), so only this
    # check can tell.
    async with open_cluster_harness(nursery, tmp_path, pg_database, nats_server.url) as cluster:
        with trio.fail_after(START_CEILING):
            await cluster.start_node(database_pool_size=150, nats_prefix="budget")
            assert not [p for p in server_log.take() if "may hold" in p]
            await cluster.start_node(database_pool_size=150, nats_prefix="budget")
        logged = [p for p in server_log.take() if "may hold" in p]
        assert len(logged) == 1
        assert logged[0].startswith("ERROR fechatter.app")
        assert "2 cluster nodes with database_pool_size 150 may hold 304" in logged[0]
