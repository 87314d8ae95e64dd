"""What the security-version check adds to authenticating a request (issue 9, kind 5).

    python -m bench.token_check [--checks 20000] [--runs 5]

Times, interleaved in one process, (a) verifying an access token's JWT signature and claims
(what every request paid before) and (b) the same plus ``TokenGuard.check`` against a warm
in-memory map, over a real SQLite file. Also times (c) a cache miss (one database read).
Prints the median µs per check of ``--runs``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio

from fechatter.auth import Authenticator
from fechatter.security import TokenGuard
from fechatter.storage.sqlite import open_sqlite_storage


async def main(checks: int, runs: int) -> None:
    auth = Authenticator(
        "bench-secret-" + "x" * 40,
        access_ttl=3600,
        refresh_ttl=60,
        time_cost=1,
        memory_cost=8,
        parallelism=1,
        hash_threads=1,
    )
    with tempfile.TemporaryDirectory() as folder:
        async with open_sqlite_storage(str(Path(folder) / "bench.db")) as storage:
            users = [
                (await storage.create_user(f"u{i}", f"u{i}@example.com", "x", None))[0].id
                for i in range(100)
            ]
            tokens = [auth.issue_access_token(uid) for uid in users]
            guard = TokenGuard(storage)
            for token in tokens:
                await guard.check(auth.verify_access_token(token))
            verify_only: list[float] = []
            with_guard: list[float] = []
            for _ in range(runs):
                start = time.perf_counter()
                for i in range(checks):
                    auth.verify_access_token(tokens[i % len(tokens)])
                verify_only.append((time.perf_counter() - start) / checks * 1e6)
                start = time.perf_counter()
                for i in range(checks):
                    await guard.check(auth.verify_access_token(tokens[i % len(tokens)]))
                with_guard.append((time.perf_counter() - start) / checks * 1e6)
            misses: list[float] = []
            for uid in users:
                cold = TokenGuard(storage)
                start = time.perf_counter()
                await cold.load(uid)
                misses.append((time.perf_counter() - start) * 1e6)
    a, b = statistics.median(verify_only), statistics.median(with_guard)
    print(f"JWT verify only:           {a:7.2f} µs/check (median of {runs})")
    print(f"JWT verify + guard (warm): {b:7.2f} µs/check (+{b - a:.2f} µs, {b / a:.3f}x)")
    print(f"guard cache miss (SQLite): {statistics.median(misses):7.1f} µs (median of 100)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    trio.run(main, args.checks, args.runs)
