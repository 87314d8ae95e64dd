"""Results as JSON, a Markdown table per scenario, and PNG plots (matplotlib)."""

from __future__ import annotations

import json
import platform
from datetime import date
from pathlib import Path
from typing import Any

from bench.scenarios import Outcome


def machine() -> dict[str, Any]:
    import os

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 2**20, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    parts = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        subset = [r for r in rows if r["scenario"] == scenario]
        keys = [k for k in subset[0] if k not in ("scenario", "pinned", "date")]
        dates = sorted({r.get("date", "") for r in subset} - {""})
        parts.append(f"### {scenario}" + (f" ({', '.join(dates)})" if dates else "") + "\n")
        parts.append("| " + " | ".join(keys) + " |")
        parts.append("|" + "---|" * len(keys))
        for r in subset:
            parts.append("| " + " | ".join(str(r[k]) for k in keys) + " |")
        parts.append("")
    return "\n".join(parts)


def merged_rows(previous: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a results file after a run: ``new`` replaces the rows of the scenarios it
    ran; the rows of every other scenario are kept, so running one scenario does not erase the
    others' results. Scenario order: as before, newly run scenarios last."""
    ran = {r["scenario"] for r in new}
    kept = [r for r in previous if r["scenario"] not in ran]
    order = list(dict.fromkeys([r["scenario"] for r in previous] + [r["scenario"] for r in new]))
    rows = kept + new
    return sorted(rows, key=lambda r: order.index(r["scenario"]))


def write(outcome: Outcome, folder: Path, *, plots: bool = True) -> None:
    """Write ``results.json`` and ``results.md`` in ``folder`` (rows merged with an existing
    ``results.json``, see ``merged_rows``; each row carries the date it was measured) and,
    with ``plots``, the PNG plots of this run's scenarios."""
    folder.mkdir(parents=True, exist_ok=True)
    today = date.today().isoformat()
    new = [{**r, "date": r.get("date", today)} for r in outcome.rows]
    previous: list[dict[str, Any]] = []
    path = folder / "results.json"
    if path.exists():
        previous = json.loads(path.read_text()).get("rows", [])
    rows = merged_rows(previous, new)
    data = {"machine": machine(), "rows": rows}
    path.write_text(json.dumps(data, indent=2) + "\n")
    (folder / "results.md").write_text(markdown(rows))
    if plots:
        plot(outcome, folder)


def plot(outcome: Outcome, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # cluster_fanout's curves get their own file: a run of it alone must not replace the
    # single-node scenarios' plot (and the two sets are not comparable: PostgreSQL vs SQLite).
    cluster = {k: v for k, v in outcome.latencies.items() if k.startswith("cluster_fanout")}
    scale = {k: v for k, v in outcome.latencies.items() if k.startswith("cluster_scale")}
    single = {k: v for k, v in outcome.latencies.items() if k not in cluster and k not in scale}
    for latencies, name in (
        (single, "latency_cdf.png"),
        (cluster, "cluster_fanout_cdf.png"),
        (scale, "cluster_scale_cdf.png"),
    ):
        if latencies:
            cdf(latencies, folder / name)
    scale_rows = [r for r in outcome.rows if r["scenario"] == "cluster_scale"]
    if scale_rows:
        scale_cost(scale_rows, folder / "cluster_scale_cost.png")

    conn = [r for r in outcome.rows if r["scenario"] == "connections"]
    fan = [r for r in outcome.rows if r["scenario"] == "fanout"]
    if conn or fan:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        if conn:
            left.plot([r["streams"] for r in conn], [r["rss_per_1000_mib"] for r in conn], "o-")
        left.set_xlabel("open streams")
        left.set_ylabel("server RSS per 1000 idle streams (MiB)")
        left.set_title("Memory per connection")
        left.grid(True, alpha=0.3)
        if fan:
            xs = [r["members"] for r in fan]
            right.plot(xs, [r["server_cpu_us_per_delivery"] for r in fan], "o-", label="server")
            right.plot(
                xs, [r["generator_cpu_us_per_delivery"] for r in fan], "s--", label="load generator"
            )
            right.legend()
        right.set_xlabel("members online in the chat")
        right.set_ylabel("CPU per delivered event (µs)")
        right.set_title("Fan-out cost")
        right.grid(True, alpha=0.3)
        for axis in (left, right):
            axis.set_xscale("log")
        fig.tight_layout()
        fig.savefig(folder / "cost.png", dpi=110)
        plt.close(fig)


def scale_cost(rows: list[dict[str, Any]], path: Path) -> None:
    """cluster_scale: CPU per message by node count, stacked fechatter / PostgreSQL / NATS,
    one panel per phase, and the server fan-out p99 next to the client's delivery p99."""
    import matplotlib.pyplot as plt

    phases = list(dict.fromkeys(r["phase"] for r in rows))
    fig, axes = plt.subplots(1, len(phases) + 1, figsize=(4.2 * (len(phases) + 1), 4))
    for ax, phase in zip(axes, phases, strict=False):
        subset = [r for r in rows if r["phase"] == phase]
        xs = [f"{r['nodes']}{'+NATS' * (r['nodes'] == 1 and r.get('bus', False))}" for r in subset]
        bottom = [0.0] * len(subset)
        for key, label in (
            ("fechatter_cpu_us_per_message", "fechatter nodes"),
            ("postgres_cpu_us_per_message", "PostgreSQL"),
            ("nats_cpu_us_per_message", "nats-server"),
        ):
            values = [float(r[key]) for r in subset]
            ax.bar(xs, values, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_xlabel("nodes")
        ax.set_ylabel("CPU per message, all processes (µs)")
        ax.set_title(f"{phase}: cost per message")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    ax = axes[-1]
    for phase, marker in zip(phases, "os", strict=False):
        subset = [r for r in rows if r["phase"] == phase and not (r["nodes"] == 1 and r.get("bus"))]
        xs = [r["nodes"] for r in subset]
        ax.plot(xs, [r["delivery_p99_ms"] for r in subset], marker + "-", label=f"{phase} client")
        ax.plot(
            xs, [r["server_fanout_p99_ms"] for r in subset], marker + "--", label=f"{phase} server"
        )
    ax.set_xlabel("nodes")
    ax.set_ylabel("p99 (ms): send→delivery vs commit→kernel")
    ax.set_title("Latency p99, client vs server")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cdf(latencies: dict[str, list[float]], path: Path) -> None:
    """One CDF curve per label (samples in ms, log x axis), saved as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, samples in latencies.items():
        if not samples:
            continue
        ordered = sorted(samples)
        ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.plot(ordered, ys, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of deliveries")
    ax.set_title("Delivery latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def complete(rows: list[dict[str, Any]]) -> bool:
    return all(r["delivered"] == r["expected"] and not r.get("duplicates") for r in rows)
