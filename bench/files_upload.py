"""``python -m bench.files_upload [--mib 20] [--uploads 5] [--parallel 4]``: upload throughput
and the server's memory for large files (issue 15, SPEC §8).

Starts ``fechatter serve`` (SQLite in a temporary folder, ``bench.harness.run_server``), signs
a user up, then uploads a ``--mib`` MiB file ``--uploads`` times one after another, then
``--parallel`` at once, streaming each body from a generator (the client never holds a file).
The server's RSS is sampled every 20 ms from ``/proc``: the baseline after a warm-up upload,
the peak while uploading, the growth. The upload route streams to disk, so the growth must
stay well under the file's size (it is checked: exit 1 if the peak grew by the file's size).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator

import httpx
import trio

from bench.harness import Server, run_server

CHUNK = 256 * 1024
BOUNDARY = "benchboundary"


async def multipart(size: int) -> AsyncIterator[bytes]:
    """A multipart body with one ``file`` part of ``size`` bytes, generated as it is sent."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    block = bytes(range(256)) * (CHUNK // 256)
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        yield block[:n]
        sent += n
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def upload(client: httpx.AsyncClient, token: str, size: int) -> None:
    r = await client.post(
        "/api/files",
        content=multipart(size),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        },
    )
    if r.status_code != 201:
        raise RuntimeError(f"upload failed: {r.status_code} {r.text}")


async def measure(mib: int, uploads: int, parallel: int) -> dict[str, float]:
    size = mib * 1024 * 1024
    env = {
        "FECHATTER_UPLOAD_BURST": "1000",
        "FECHATTER_UPLOAD_RATE": "1000",
        "FECHATTER_MAX_FILE_BYTES": str(size),
    }
    async with run_server(None, extra_env=env) as (server, _url):
        return await drive(server, size, uploads, parallel)


async def drive(server: Server, size: int, uploads: int, parallel: int) -> dict[str, float]:
    """Upload against a running server; the figures (MiB, MiB/s)."""
    mib = size / (1024 * 1024)
    async with httpx.AsyncClient(base_url=server.api_url, timeout=120) as client:
        r = await client.post(
            "/api/auth/signup",
            json={"fullname": "Bench", "email": "bench@example.com", "password": "benchmark"},
        )
        token = r.json()["token"]
        await upload(client, token, 1024 * 1024)  # warm-up: imports, threads, tables
        baseline = server.rss()
        peak = baseline
        done = trio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, server.rss())
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            started = time.perf_counter()
            for _ in range(uploads):
                await upload(client, token, size)
            sequential = time.perf_counter() - started
            sequential_peak = peak
            started = time.perf_counter()
            async with trio.open_nursery() as batch:
                for _ in range(parallel):
                    batch.start_soon(upload, client, token, size)
            concurrent = time.perf_counter() - started
            done.set()
        after = server.rss()
    return {
        "file_mib": mib,
        "sequential_uploads": uploads,
        "sequential_mib_s": uploads * mib / sequential,
        "parallel_uploads": parallel,
        "parallel_mib_s": parallel * mib / concurrent,
        "rss_baseline_mib": baseline,
        "rss_peak_sequential_mib": sequential_peak,
        "rss_peak_mib": peak,
        "rss_after_mib": after,
        "rss_growth_sequential_mib": sequential_peak - baseline,
        "rss_growth_mib": peak - baseline,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=20, help="file size, MiB")
    parser.add_argument("--uploads", type=int, default=5, help="sequential uploads")
    parser.add_argument("--parallel", type=int, default=4, help="uploads at once")
    args = parser.parse_args(argv)
    result = trio.run(measure, args.mib, args.uploads, args.parallel)
    for key, value in result.items():
        print(f"{key:28} {value:10.1f}")
    # One upload at a time must not grow the server by the file's size.
    return 0 if result["rss_growth_sequential_mib"] < args.mib else 1


if __name__ == "__main__":
    sys.exit(main())
