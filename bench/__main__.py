"""``python -m bench run [scenario ...] [--quick] [--database-url URL] [--out DIR] [--cluster N]``

Starts the server itself (SQLite in a temp dir unless ``--database-url``), drives it over real
sockets on 127.0.0.1, stops it, and writes ``results.json``, ``results.md`` and PNG plots to
``--out`` (default ``bench/results``, or ``bench/results-quick`` with ``--quick``). Exits 1 if
any scenario delivered a different number of events than expected, or any twice.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path
from typing import Any

import trio

from bench import cluster_fanout, cluster_scale, report, scenarios

FULL: dict[str, dict[str, Any]] = {
    "connections": {"sizes": [1000, 5000, 10000]},
    "fanout": {"sizes": [100, 1000, 5000, 10000], "messages": 30, "rate": 5.0},
    "throughput": {"chats": 1000, "members": 10, "senders": 100, "seconds": 10.0},
    "reconnect_storm": {"k": 1000, "messages": 20},
    # 100 toggles/s requested; capped by the generator budget (10/s with 1000 streams online).
    "reaction_storm": {
        "members": 1000,
        "streams": [100, 1000],
        "reactors": 50,
        "rate": 100.0,
        "seconds": 10.0,
    },
    # One node vs two (cluster preview), same run; starts its own PostgreSQL and NATS.
    "cluster_fanout": {"members": 1000, "messages": 30, "rate": 5.0},
    # 1..N nodes (--cluster N), throughput and fan-out each; its own PostgreSQL and NATS.
    "cluster_scale": {
        "nodes": 2,
        "chats": 200,
        "members": 10,
        "senders": 100,
        "seconds": 8.0,
        "fan_members": 1000,
        "messages": 30,
        "rate": 5.0,
        "bus_baseline": True,
    },
}
QUICK: dict[str, dict[str, Any]] = {
    "connections": {"sizes": [100]},
    "fanout": {"sizes": [50], "messages": 5, "rate": 20.0},
    "throughput": {"chats": 20, "members": 5, "senders": 5, "seconds": 1.0},
    "reconnect_storm": {"k": 40, "messages": 5},
    "reaction_storm": {
        "members": 60,
        "streams": [20],
        "reactors": 5,
        "rate": 20.0,
        "seconds": 1.0,
    },
    "cluster_fanout": {"members": 50, "messages": 5, "rate": 20.0},
    "cluster_scale": {
        "nodes": 2,
        "chats": 10,
        "members": 5,
        "senders": 5,
        "seconds": 1.0,
        "fan_members": 40,
        "messages": 5,
        "rate": 20.0,
        "bus_baseline": False,
    },
}
# Not part of a bare ``python -m bench run`` (it needs embedded PostgreSQL and nats-server and
# is not comparable with the SQLite rows): name it.
EXPLICIT_ONLY = ("cluster_fanout", "cluster_scale")


async def run(
    names: list[str], quick: bool, database_url: str | None, cluster: int | None = None
) -> scenarios.Outcome:
    """Run ``names`` in order at full or ``quick`` sizes; ``cluster``: cluster_scale's
    largest node count (default: the size's ``nodes``)."""
    sizes = QUICK if quick else FULL
    total = scenarios.Outcome()
    for name in names:
        params = dict(sizes[name])
        if name == "cluster_scale" and cluster is not None:
            params["nodes"] = cluster
        print(f"-- {name} {params}", file=sys.stderr, flush=True)
        if name == "connections":
            result = await scenarios.connections(params["sizes"], database_url)
        elif name == "fanout":
            result = await scenarios.fanout(
                params["sizes"], params["messages"], params["rate"], database_url
            )
        elif name == "throughput":
            result = await scenarios.throughput(
                params["chats"],
                params["members"],
                params["senders"],
                params["seconds"],
                database_url,
            )
        elif name == "cluster_fanout":
            result = await cluster_fanout.cluster_fanout(
                params["members"], params["messages"], params["rate"]
            )
        elif name == "cluster_scale":
            result = await cluster_scale.cluster_scale(
                params["nodes"],
                params["chats"],
                params["members"],
                params["senders"],
                params["seconds"],
                params["fan_members"],
                params["messages"],
                params["rate"],
                params["bus_baseline"],
            )
        elif name == "reaction_storm":
            result = await scenarios.reaction_storm(
                params["members"],
                params["streams"],
                params["reactors"],
                params["rate"],
                params["seconds"],
                database_url,
            )
        else:
            result = await scenarios.reconnect_storm(params["k"], params["messages"], database_url)
        for row in result.rows:
            print(row, file=sys.stderr, flush=True)
        total.rows += result.rows
        total.latencies.update(result.latencies)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run scenarios")
    p.add_argument(
        "scenarios", nargs="*", metavar="scenario", help=f"any of {', '.join(FULL)} (default: all)"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, well under a minute")
    p.add_argument("--database-url", help="e.g. postgresql://... (default: SQLite in a temp dir)")
    p.add_argument("--out", type=Path, help="results folder")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--cluster",
        type=int,
        metavar="N",
        help="run cluster_scale with 1..N nodes (N ≥ 1; its own PostgreSQL and NATS)",
    )
    args = parser.parse_args()
    if args.cluster is not None and not 1 <= args.cluster <= 8:
        parser.error("--cluster N: 1 ≤ N ≤ 8")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    names = args.scenarios or (
        ["cluster_scale"]
        if args.cluster is not None
        else [n for n in FULL if n not in EXPLICIT_ONLY]
    )
    unknown = [n for n in names if n not in FULL]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(FULL)}")
    outcome = trio.run(run, names, args.quick, args.database_url, args.cluster)
    out = args.out or Path(__file__).parent / ("results-quick" if args.quick else "results")
    report.write(outcome, out, plots=not args.no_plots)
    print(report.markdown(outcome.rows))
    if not report.complete(outcome.rows):
        print("INCOMPLETE: some events were lost or duplicated", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
