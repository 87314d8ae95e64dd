"""Prometheus metrics, in a registry per server (never the global one: tests run several).

Request counts and latencies are recorded by the HTTP layer; gauges that describe live state
(actors alive, mailbox depth, storage transactions) are refreshed when ``/metrics`` is read.
Counters that other parts keep as plain ints (messages committed, the realtime listener's
``RealtimeStats``, the hub's deliveries) are read at the same moment into a ``LiveCounts``
and exposed by a collector, as counters (``*_total``) and gauges, under Prometheus names.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)


@dataclass
class RealtimeStats:
    """Counters of the listener (mutable; read by /api/sse/health and tests)."""

    active: int = 0  # open connections, pending and streams
    pending: int = 0  # open connections that have not yet presented a valid token
    accepted: int = 0
    refused: int = 0  # 503 over_capacity: max_connections streams were open
    too_many_streams: int = 0  # 429: the user already held max_streams_per_user streams
    pending_dropped: int = 0  # oldest pending connection closed to make room for a newcomer
    head_timeouts: int = 0  # pending connections closed at head_timeout
    slow_consumers: int = 0
    bad_requests: int = 0


# Upper bounds (seconds) of ``FanoutTimes``' buckets: 2^(k/4) steps (+19 % each) from 61 µs to
# 64 s, so a quantile read from the counts is within one step of the true value. The last
# bucket (``+Inf``) takes anything longer.
FANOUT_BOUNDS: tuple[float, ...] = tuple(2.0 ** (k / 4 - 14) for k in range(81))


class FanoutTimes:
    """How long events take to leave this process, as two histograms with ``FANOUT_BOUNDS``
    buckets (counts, never reset, so a reader diffs two readings for a window):

    - ``hub``: the ``UserHub`` received the event → its bytes were handed to the kernel for
      every local stream (the end of the synchronous fan-out loop; a stream whose socket
      buffer was full queues instead and is sent later by its writer task).
    - ``commit``: the event's commit (wall clock, ``Event.committed``: the owner's ChatActor
      right after the write returned; in a cluster it travels in the ``Fx-Committed`` header)
      → the same end, so it includes the outbox publisher, NATS and the event router.

    Only events with at least one local stream and (``commit``) a known commit time are
    counted. Cost: two clock reads and two ``bisect`` per event, none per delivery
    (bench/README.md "Cluster scale" measures it).
    """

    __slots__ = ("commit", "commit_sum", "hub", "hub_sum")

    def __init__(self) -> None:
        self.hub = [0] * (len(FANOUT_BOUNDS) + 1)
        self.commit = [0] * (len(FANOUT_BOUNDS) + 1)
        self.hub_sum = 0.0
        self.commit_sum = 0.0

    def observe(self, hub_seconds: float, commit_seconds: float | None) -> None:
        """Count one event: ``hub_seconds`` (≥ 0) and, if known, ``commit_seconds``."""
        self.hub[bisect_left(FANOUT_BOUNDS, hub_seconds)] += 1
        self.hub_sum += hub_seconds
        if commit_seconds is not None:
            # Wall clocks of two hosts may disagree: a negative age counts in the first bucket.
            self.commit[bisect_left(FANOUT_BOUNDS, commit_seconds)] += 1
            self.commit_sum += commit_seconds

    def copy(self) -> FanoutTimes:
        """A snapshot (for ``LiveCounts``)."""
        other = FanoutTimes()
        other.hub, other.commit = list(self.hub), list(self.commit)
        other.hub_sum, other.commit_sum = self.hub_sum, self.commit_sum
        return other


def bucket_quantile(counts: list[int], q: float) -> float:
    """The ``q`` quantile (0 to 1) of a ``FanoutTimes`` histogram's ``counts`` (per bucket, not
    cumulative; e.g. the difference of two readings), in seconds: interpolated geometrically
    inside its bucket (error ≤ one 19 % step). NaN for no samples; ``+Inf`` bucket → its
    lower bound."""
    total = sum(counts)
    if total == 0:
        return float("nan")
    rank = q * total
    seen = 0
    for k, n in enumerate(counts):
        if n and seen + n >= rank:
            if k >= len(FANOUT_BOUNDS):
                return FANOUT_BOUNDS[-1]
            high = FANOUT_BOUNDS[k]
            low = FANOUT_BOUNDS[k - 1] if k else high / 2**0.25
            return float(low * (high / low) ** ((rank - seen) / n))
        seen += n
    return FANOUT_BOUNDS[-1]


@dataclass(frozen=True, slots=True)
class LiveCounts:
    """What ``/metrics`` reads from the running parts, at the moment it is read."""

    messages_sent: int = 0  # messages committed by this process, over every transport
    realtime: RealtimeStats = field(default_factory=RealtimeStats)  # a copy
    streams: int = 0  # open realtime streams (admitted connections) the hub knows
    deliveries: int = 0  # events handed to streams (one per event per stream)
    events_published: int = 0  # events the hub published (each to its recipients)
    fanout: FanoutTimes = field(default_factory=FanoutTimes)  # a copy


# (name without _total, help, RealtimeStats field) of the listener's counters.
_REALTIME_COUNTERS = (
    ("fechatter_realtime_accepted", "realtime connections accepted", "accepted"),
    ("fechatter_realtime_refused", "streams refused: max_connections open (503)", "refused"),
    (
        "fechatter_realtime_too_many_streams",
        "streams refused: the user held max_streams_per_user (429)",
        "too_many_streams",
    ),
    (
        "fechatter_realtime_pending_dropped",
        "pending connections dropped to make room for a newcomer",
        "pending_dropped",
    ),
    (
        "fechatter_realtime_head_timeouts",
        "pending connections closed at head_timeout",
        "head_timeouts",
    ),
    (
        "fechatter_realtime_slow_consumers",
        "streams closed because their outbox overflowed",
        "slow_consumers",
    ),
    ("fechatter_realtime_bad_requests", "malformed stream requests and ops (400)", "bad_requests"),
)


class _LiveCollector:
    """Exposes the last ``LiveCounts`` handed to ``Metrics.render``."""

    def __init__(self) -> None:
        self.live = LiveCounts()

    def collect(self) -> Iterator[Metric]:
        live = self.live
        rt = live.realtime
        yield CounterMetricFamily(
            "fechatter_messages_sent",
            "messages committed (HTTP and WebSocket sends; idempotent repeats not counted)",
            value=live.messages_sent,
        )
        for name, text, attr in _REALTIME_COUNTERS:
            yield CounterMetricFamily(name, text, value=getattr(rt, attr))
        yield CounterMetricFamily(
            "fechatter_realtime_deliveries",
            "events handed to realtime streams",
            value=live.deliveries,
        )
        yield CounterMetricFamily(
            "fechatter_realtime_events_published",
            "events published to users",
            value=live.events_published,
        )
        hist = HistogramMetricFamily(
            "fechatter_fanout_seconds",
            "an event's time to leave this process: stage=hub from the hub, stage=commit from"
            " its commit, to its bytes handed to the kernel for every local stream",
            labels=["stage"],
        )
        for stage, counts, total in (
            ("hub", live.fanout.hub, live.fanout.hub_sum),
            ("commit", live.fanout.commit, live.fanout.commit_sum),
        ):
            cumulative, buckets = 0, []
            for bound, n in zip((*FANOUT_BOUNDS, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append((_le(bound), float(cumulative)))
            hist.add_metric([stage], buckets, total)
        yield hist
        yield GaugeMetricFamily(
            "fechatter_realtime_connections",
            "open realtime connections, pending and streams",
            value=rt.active,
        )
        yield GaugeMetricFamily(
            "fechatter_realtime_pending_connections",
            "realtime connections that have not yet presented a valid token",
            value=rt.pending,
        )
        yield GaugeMetricFamily(
            "fechatter_realtime_streams", "open realtime streams", value=live.streams
        )


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class Metrics:
    """The server's metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fechatter_http_requests",
            "HTTP requests handled",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fechatter_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.chat_actors = Gauge(
            "fechatter_chat_actors", "ChatActors alive", registry=self.registry
        )
        self.mailbox_depth = Gauge(
            "fechatter_mailbox_depth",
            "commands queued in all chat mailboxes",
            registry=self.registry,
        )
        self.actor_restarts = Gauge(
            "fechatter_actor_restarts", "ChatActor restarts since start", registry=self.registry
        )
        self.online_users = Gauge(
            "fechatter_online_users", "users with a live stream", registry=self.registry
        )
        self.storage_transactions = Gauge(
            "fechatter_storage_transactions",
            "committed write transactions",
            registry=self.registry,
        )

        self._live = _LiveCollector()
        self.registry.register(self._live)

    def render(self, live: LiveCounts | None = None) -> bytes:
        """The exposition text; ``live`` (else the last one given) feeds the live series."""
        if live is not None:
            self._live.live = live
        return generate_latest(self.registry)
