"""Presence across nodes in PostgreSQL (issue 12, docs/cluster.md §6, plan step C2): rows per
user and node, counted while the node is live or within the grace, per-user serialised
claims and releases that say when the user's cluster-wide state flipped, and the reap of dead
nodes' rows by exactly one node."""

from __future__ import annotations

import trio

from fechatter.storage.cluster import ClusterStore
from fechatter.storage.postgres import open_postgres_storage
from fechatter.storage.presence import Change, PresenceStore

from .factories import make_group
from .test_cluster_ownership import FAST, _expire

A, B, C = "node-a.aaaaaa", "node-b.bbbbbb", "node-c.cccccc"


async def test_claims_and_releases_say_when_the_user_came_online_or_went_offline(
    pg_database: str,
) -> None:
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        store = PresenceStore(storage, grace=0.0)
        with trio.fail_after(20):
            await cluster.register_node(A, "all", 60)
            await cluster.register_node(B, "all", 60)
            _, (u0, u1, u2), _ = await make_group(storage, 3)
            assert await store.claim(u1.id, A) == Change(changed=True, elsewhere=False)
            assert (await store.claim(u1.id, A)).global_change is False  # already there
            assert await store.claim(u1.id, B) == Change(changed=True, elsewhere=True)
            assert await store.release(u1.id, A) == Change(changed=True, elsewhere=True)
            released = await store.release(u1.id, B)
            assert (released, released.global_change) == (Change(True, False), True)
            assert await store.release(u1.id, B) == Change(changed=False, elsewhere=False)
            await store.claim(u2.id, A)
            assert await store.online([u0.id, u1.id, u2.id]) == {u2.id}
            assert await store.online([]) == set()
            assert sorted(await store.peers(u0.id, 100), key=str) == sorted(
                [(u1.id, None), (u2.id, A)], key=str
            )
            assert await store.peers(u0.id, 2) == []  # the chat is above the size limit


async def test_concurrent_releases_of_a_users_last_two_rows_announce_exactly_once(
    pg_database: str,
) -> None:
    """Without the per-user lock both deletes would see the other's row still there and
    neither would say the user went offline."""
    async with (
        open_postgres_storage(pg_database, **FAST) as one,
        open_postgres_storage(pg_database, **FAST) as two,
    ):
        cluster = ClusterStore(one)
        with trio.fail_after(20):
            await cluster.register_node(A, "all", 60)
            await cluster.register_node(B, "all", 60)
            _, (_, u1), _ = await make_group(one, 2)
            changes: list[Change] = []

            async def release(store: PresenceStore, node: str) -> None:
                changes.append(await store.release(u1.id, node))

            for _round in range(5):
                await PresenceStore(one, 0.0).claim(u1.id, A)
                await PresenceStore(one, 0.0).claim(u1.id, B)
                changes.clear()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(release, PresenceStore(one, 0.0), A)
                    nursery.start_soon(release, PresenceStore(two, 0.0), B)
                assert sorted(c.global_change for c in changes) == [False, True]


async def test_a_dead_nodes_rows_count_within_the_grace_then_one_reaper_gets_them(
    pg_database: str,
) -> None:
    async with (
        open_postgres_storage(pg_database, **FAST) as one,
        open_postgres_storage(pg_database, **FAST) as two,
    ):
        cluster = ClusterStore(one)
        with trio.fail_after(20):
            for node in (A, B, C):
                await cluster.register_node(node, "all", 60)
            _, (u0, u1, u2), _ = await make_group(one, 3)
            patient, prompt = PresenceStore(one, grace=60.0), PresenceStore(one, grace=0.0)
            await prompt.claim(u1.id, A)
            await prompt.claim(u2.id, A)
            await prompt.claim(u2.id, B)
            await prompt.claim(u0.id, B)
            _expire(pg_database, A)  # A's beats stopped: its row ended a second ago
            users = [u0.id, u1.id, u2.id]
            assert await patient.online(users) == {u0.id, u1.id, u2.id}  # within the grace
            assert await patient.reap() == []
            assert await prompt.online(users) == {u0.id, u2.id}
            reaped: list[list[int]] = []

            async def reap(store: PresenceStore) -> None:
                reaped.append(await store.reap())

            async with trio.open_nursery() as nursery:  # two nodes reap at once
                nursery.start_soon(reap, prompt)
                nursery.start_soon(reap, PresenceStore(two, grace=0.0))
            # u1 had only A's row: offline, told by one reaper; u2 still has B's row.
            assert sorted(reaped) == [[], [u1.id]]
            # B registers again as C (its row expired): its rows move, and count again.
            assert sorted(await prompt.move(B, C)) == sorted([u0.id, u2.id])
            _expire(pg_database, B)
            assert await prompt.online(users) == {u0.id, u2.id}
            assert await prompt.reap() == []


async def test_a_move_onto_rows_the_new_id_already_has_keeps_one_row_each(
    pg_database: str,
) -> None:
    """A move that committed while its caller saw a timeout leaves the node on its old id:
    its retried syncs write old-id rows of users the new id already has. The next move must
    merge them (one row per user), not fail with a unique violation that would end the
    node's presence task."""
    async with open_postgres_storage(pg_database, **FAST) as storage:
        cluster = ClusterStore(storage)
        store = PresenceStore(storage, grace=0.0)
        with trio.fail_after(20):
            await cluster.register_node(A, "all", 60)
            await cluster.register_node(B, "all", 60)
            _, (u0, u1), _ = await make_group(storage, 2)
            await store.claim(u0.id, B)  # moved earlier (the move the caller saw time out)
            await store.claim(u0.id, A)  # written again under the old id
            await store.claim(u1.id, A)
            assert sorted(await store.move(A, B)) == sorted([u0.id, u1.id])
            assert await store.move(A, B) == []
            assert await store.release(u0.id, B) == Change(changed=True, elsewhere=False)
            assert await store.release(u1.id, B) == Change(changed=True, elsewhere=False)
