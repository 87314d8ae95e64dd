"""``python -m bench.search [--quick] [--messages N] [--backend sqlite|postgres|both] [--out DIR]``

Message search (issue 16) on a generated corpus: mixed English / Chinese / Japanese messages
(faker's en_US, zh_CN and ja_JP sentence generators), ``--chats`` chats (1,000), one searching
user in a fifth of them (200), three other members each. Users and chats are made through
the storage API; the messages are bulk-inserted with SQL (the search triggers index them as
they go, exactly as on the write path), so building a million rows stays bounded.

Measured, per backend (SQLite file; PostgreSQL: a throw-away embedded server):

- **query latency** p50 / p99 / max of ``Search.messages`` (storage query + highlights, page of
  20) for: a common word, a rare word (each in ~5 messages), a two-word quoted phrase, a
  two-character Chinese word, a Japanese word, a one-character CJK query (the prefix
  fallback); each newest-first and by relevance;
- **index size** on disk (SQLite: the ``messages_fts`` tables' pages from ``dbstat``;
  PostgreSQL: the GIN index plus the ``search_tsv`` column) next to the messages table;
- **write throughput** with and without the index, same run: ``--writers`` concurrent
  closed-loop single-message sends through ``Storage.insert_messages`` (the group commit) into
  fresh chats for ``--write-seconds``, alternating with / without (search triggers dropped)
  twice; the ratio of the means.

Writes ``search.json`` and ``search.md`` to ``--out`` (``bench/results``; ``--quick``:
``bench/results-quick``, small sizes, < 60 s).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio
from faker import Faker

from fechatter.domain.search import Search
from fechatter.models import ChatType, NewMessage, Role, SearchFilters, format_time
from fechatter.search_text import parse_query, search_text
from fechatter.storage import Storage, open_storage
from fechatter.storage.sqlite import register_functions

SEED = 16
RARE_WORDS = 40  # distinct rare words, each planted in RARE_COPIES messages
RARE_COPIES = 5


def corpus_pools(size: int) -> dict[str, list[str]]:
    """``size`` sentences per language, from faker (seeded)."""
    pools: dict[str, list[str]] = {}
    for lang, locale in (("en", "en_US"), ("zh", "zh_CN"), ("ja", "ja_JP")):
        fake = Faker(locale)
        fake.seed_instance(SEED)
        pools[lang] = [fake.sentence(nb_words=10) for _ in range(size)]
    return pools


def messages_content(pools: dict[str, list[str]], n: int, rng: random.Random) -> list[str]:
    """``n`` message texts: 50 % English, 30 % Chinese, 20 % Japanese, one or two sentences;
    the rare words ``qzrare<k>x`` planted ``RARE_COPIES`` times each."""
    out = []
    for _ in range(n):
        roll = rng.random()
        lang = "en" if roll < 0.5 else "zh" if roll < 0.8 else "ja"
        pool = pools[lang]
        text = rng.choice(pool)
        if rng.random() < 0.3:
            text += " " + rng.choice(pool)
        out.append(text)
    for k in range(RARE_WORDS):
        for _ in range(RARE_COPIES):
            i = rng.randrange(n)
            out[i] = f"{out[i]} qzrare{k}x"
    return out


def query_sets(pools: dict[str, list[str]], rng: random.Random, per: int) -> dict[str, list[str]]:
    """``per`` queries of each kind, drawn from the pools' own words."""
    en_words = Counter(
        w.strip(".").lower() for s in pools["en"] for w in s.split() if len(w.strip(".")) > 3
    )
    common = [w for w, _ in en_words.most_common(per)]
    phrases = []
    for sentence in rng.sample(pools["en"], per):
        words = sentence.rstrip(".").split()
        i = rng.randrange(len(words) - 1)
        phrases.append(f'"{words[i]} {words[i + 1]}"')
    zh_bigrams = Counter(
        s[i : i + 2]
        for s in pools["zh"]
        for i in range(len(s) - 1)
        if all("\u4e00" <= c <= "\u9fff" for c in s[i : i + 2])
    )
    zh = [w for w, _ in zh_bigrams.most_common(per * 4)][::4][:per]
    ja_words = Counter(
        s[i : i + 3]
        for s in pools["ja"]
        for i in range(len(s) - 2)
        if all("\u3040" <= c <= "\u9fff" for c in s[i : i + 3])
    )
    ja = [w for w, _ in ja_words.most_common(per * 4)][::4][:per]
    one_char = [w[0] for w in zh][:per]
    return {
        "common word": common,
        "rare word": [f"qzrare{k % RARE_WORDS}x" for k in range(per)],
        "phrase": phrases,
        "CJK zh 2-char": zh,
        "CJK ja 3-char": ja,
        "CJK 1-char": one_char,
    }


async def build_world(
    storage: Storage, chats: int, member_chats: int, tag: str
) -> tuple[int, list[int], list[int]]:
    """(searching user, the ids of all chats, other users) through the storage API."""
    me, ws = await storage.create_user("Searcher", f"me.{tag}@example.com", "x", f"ws-{tag}")
    assert ws is not None
    others = []
    for i in range(60):
        user, _ = await storage.create_user(f"U{i}", f"u{i}.{tag}@example.com", "x", None)
        await storage.add_workspace_member(ws.id, user.id, Role.MEMBER)
        others.append(user.id)
    rng = random.Random(SEED)
    ids = []
    step = max(1, chats // max(1, member_chats))
    for c in range(chats):
        members = rng.sample(others, 3)
        owner = members[0]
        if c % step == 0 and c // step < member_chats:
            members.append(me.id)
        chat = await storage.create_chat(ws.id, ChatType.GROUP, None, None, owner, members)
        ids.append(chat.id)
    return me.id, ids, others


def _rows(
    contents: list[str], chat_ids: list[int], senders: list[int], rng: random.Random
) -> list[tuple[int, int, int, str, str]]:
    seqs: dict[int, int] = {}
    base = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i, content in enumerate(contents):
        chat = rng.choice(chat_ids)
        seqs[chat] = seqs.get(chat, 0) + 1
        when = format_time(base + timedelta(milliseconds=i))
        rows.append((chat, seqs[chat], rng.choice(senders), content, when))
    return rows


def bulk_sqlite(path: str, rows: list[tuple[int, int, int, str, str]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        register_functions(conn)
        for start in range(0, len(rows), 20_000):
            conn.execute("BEGIN")
            for chat, seq, sender, content, when in rows[start : start + 20_000]:
                cur = conn.execute(
                    "INSERT INTO messages (chat_id, seq, sender_id, content, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (chat, seq, sender, content, when),
                )
                # As the write path does (storage/messages.py, _INDEX_ONE).
                conn.execute(
                    "INSERT INTO messages_fts (rowid, body) VALUES (?, ?)",
                    (cur.lastrowid, search_text(content)),
                )
            conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


def bulk_postgres(url: str, rows: list[tuple[int, int, int, str, str]]) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY messages (chat_id, seq, sender_id, content, created_at) FROM STDIN"
            ) as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.execute("VACUUM ANALYZE")  # every table: the chats and members made before too


def sizes_sqlite(path: str) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        index = conn.execute(
            "SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'messages_fts%'"
        ).fetchone()[0]
        table = conn.execute(
            "SELECT SUM(pgsize) FROM dbstat WHERE name = 'messages'"
            " OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = 'messages'"
            " AND type = 'index')"
        ).fetchone()[0]
    finally:
        conn.close()
    return {"index_bytes": int(index or 0), "messages_bytes": int(table or 0)}


def sizes_postgres(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        gin = conn.execute("SELECT pg_relation_size('messages_search')").fetchone()
        column = conn.execute("SELECT COALESCE(SUM(pg_column_size(search_tsv)), 0) FROM messages")
        col = column.fetchone()
        total = conn.execute("SELECT pg_total_relation_size('messages')").fetchone()
    assert gin is not None
    assert col is not None
    assert total is not None
    index = int(gin[0]) + int(col[0])
    return {"index_bytes": index, "messages_bytes": int(total[0]) - index}


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure_queries(
    storage: Storage, user_id: int, sets: dict[str, list[str]], rounds: int
) -> list[dict[str, Any]]:
    search = Search(storage)
    out = []
    for kind, queries in sets.items():
        for relevance in (False, True):
            _say(f"  {kind} {'relevance' if relevance else 'newest'}")
            times, hits = [], []
            for _ in range(rounds):
                for q in queries:
                    started = time.perf_counter()
                    found, _ = await search.messages(
                        user_id, parse_query(q), SearchFilters(relevance=relevance), limit=20
                    )
                    times.append((time.perf_counter() - started) * 1000)
                    hits.append(len(found))
            out.append(
                {
                    "query": kind,
                    "order": "relevance" if relevance else "newest",
                    "queries": len(times),
                    "p50_ms": round(_pct(times, 50), 2),
                    "p99_ms": round(_pct(times, 99), 2),
                    "max_ms": round(max(times), 2),
                    "mean_hits": round(statistics.mean(hits), 1),
                }
            )
    return out


async def write_rate(
    storage: Storage, chats: list[int], senders: list[int], texts: list[str], seconds: float
) -> float:
    """Messages/s of closed-loop single-message sends, one task per chat."""
    done = 0
    deadline = trio.current_time() + seconds

    async def writer(chat: int, sender: int, offset: int) -> None:
        # Each writer stops after its last send: a send is never cancelled half-way.
        nonlocal done
        n = offset
        while trio.current_time() < deadline:
            text = texts[n % len(texts)]
            await storage.insert_messages(chat, [NewMessage(sender, text, (), None, None)])
            done += 1
            n += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k, chat in enumerate(chats):
            nursery.start_soon(writer, chat, senders[k % len(senders)], k * 97)
    return done / (time.perf_counter() - started)


DROP = {
    # The insert path writes messages_fts itself: without the index that name is a view whose
    # INSTEAD OF trigger does nothing, so only the statement's dispatch is left (and the
    # shadow text computed for it: a slight bias in favour of "without").
    "sqlite": [
        "DROP TRIGGER messages_fts_update",
        "DROP TRIGGER messages_fts_delete",
        "DROP TABLE messages_fts",
        "CREATE VIEW messages_fts (rowid, body) AS SELECT 0, ''",
        "CREATE TRIGGER messages_fts_noop INSTEAD OF INSERT ON messages_fts BEGIN SELECT 1; END",
    ],
    "postgres": ["DROP TRIGGER messages_search ON messages"],
}


async def measure_writes(
    backend: str, fresh: Callable[[], str], texts: list[str], writers: int, seconds: float
) -> dict[str, Any]:
    """With / without the index, alternating twice, each on a fresh database (``fresh()``
    returns its URL)."""
    rates: dict[str, list[float]] = {"with": [], "without": []}
    for attempt in range(2):
        for variant in ("with", "without"):
            url = fresh()
            _say(f"  {variant} index: building")
            async with open_storage(url) as storage:
                _, chats, others = await build_world(storage, writers, 0, f"w{attempt}{variant}")
            _say(f"  {variant} index: writing")
            if variant == "without":
                _run_sql(backend, url, DROP[backend])
            async with open_storage(url) as storage:
                rate = await write_rate(storage, chats, others, texts, seconds)
            rates[variant].append(rate)
    with_mean = statistics.mean(rates["with"])
    without_mean = statistics.mean(rates["without"])
    return {
        "writers": writers,
        "seconds": seconds,
        "with_index_msgs_per_s": [round(r) for r in rates["with"]],
        "without_index_msgs_per_s": [round(r) for r in rates["without"]],
        "ratio": round(with_mean / without_mean, 3),
    }


def _run_sql(backend: str, url: str, statements: list[str]) -> None:
    if backend == "sqlite":
        lite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            for s in statements:
                lite.execute(s)
        finally:
            lite.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


async def run_backend(
    backend: str, fresh: Callable[[], str], args: argparse.Namespace
) -> dict[str, Any]:
    rng = random.Random(SEED)
    started = time.perf_counter()
    pools = corpus_pools(args.pool)
    contents = messages_content(pools, args.messages, rng)
    url = fresh()
    async with open_storage(url) as storage:
        me, chats, others = await build_world(storage, args.chats, args.member_chats, "corpus")
    rows = _rows(contents, chats, others, rng)
    _say(f"{backend}: world built, loading {len(rows):,} messages")
    built = time.perf_counter()
    if backend == "sqlite":
        bulk_sqlite(url.removeprefix("sqlite:///"), rows)
        size = sizes_sqlite(url.removeprefix("sqlite:///"))
    else:
        bulk_postgres(url, rows)
        size = sizes_postgres(url)
    loaded = time.perf_counter() - built
    sets = query_sets(pools, rng, args.queries)
    _say(f"{backend}: loaded in {loaded:.1f} s; querying")
    async with open_storage(url) as storage:
        await measure_queries(storage, me, sets, 1)  # warm the caches
        latencies = await measure_queries(storage, me, sets, args.rounds)
    texts = [c for c in contents[:5000]]
    writes = await measure_writes(backend, fresh, texts, args.writers, args.write_seconds)
    return {
        "backend": backend,
        "messages": args.messages,
        "chats": args.chats,
        "member_chats": args.member_chats,
        "bulk_load_s": round(loaded, 1),
        "bulk_load_msgs_per_s": round(args.messages / loaded),
        **size,
        "latency": latencies,
        "writes": writes,
        "seconds": round(time.perf_counter() - started, 1),
    }


def render(results: list[dict[str, Any]]) -> str:
    lines = ["# Search bench", ""]
    for r in results:
        mb = 1024 * 1024
        lines += [
            f"## {r['backend']}: {r['messages']:,} messages in {r['chats']:,} chats"
            f" (searcher in {r['member_chats']})",
            "",
            f"- bulk load (triggers indexing): {r['bulk_load_s']} s,"
            f" {r['bulk_load_msgs_per_s']:,} msg/s",
            f"- index on disk: {r['index_bytes'] / mb:.1f} MiB"
            f" (messages table + its indexes: {r['messages_bytes'] / mb:.1f} MiB)",
            f"- writes ({r['writes']['writers']} closed-loop writers,"
            f" {r['writes']['seconds']} s each): with index"
            f" {r['writes']['with_index_msgs_per_s']} msg/s, without"
            f" {r['writes']['without_index_msgs_per_s']} msg/s, ratio **{r['writes']['ratio']}**",
            "",
            "| query | order | n | p50 ms | p99 ms | max ms | mean hits |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["latency"]:
            lines.append(
                f"| {row['query']} | {row['order']} | {row['queries']} | {row['p50_ms']}"
                f" | {row['p99_ms']} | {row['max_ms']} | {row['mean_hits']} |"
            )
        lines.append("")
    return "\n".join(lines)


QUICK = {
    "messages": 20_000,
    "chats": 100,
    "member_chats": 20,
    "pool": 300,
    "queries": 5,
    "rounds": 2,
    "writers": 20,
    "write_seconds": 1.0,
}
FULL = {
    "messages": 1_000_000,
    "chats": 1000,
    "member_chats": 200,
    "pool": 3000,
    "queries": 20,
    "rounds": 5,
    "writers": 50,
    "write_seconds": 5.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--out", type=Path, default=None)
    for name, value in FULL.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    out = args.out or Path("bench") / ("results-quick" if args.quick else "results")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend in ("sqlite", "both"):
            names = iter(range(1_000_000))

            def fresh_sqlite() -> str:
                return f"sqlite:///{tmp}/search-{next(names)}.db"

            results.append(trio.run(run_backend, "sqlite", fresh_sqlite, args))
            print(render(results[-1:]), flush=True)
        if args.backend in ("postgres", "both"):
            from tests.pg import PgServer

            server = PgServer.create({"max_connections": "100"})  # durable defaults
            try:
                results.append(trio.run(run_backend, "postgres", server.new_database, args))
                print(render(results[-1:]), flush=True)
            finally:
                server.stop_and_remove()
    (out / "search.json").write_text(json.dumps({"results": results}, indent=1) + "\n")
    (out / "search.md").write_text(render(results) + "\n")


if __name__ == "__main__":
    main()
