"""Prometheus metrics, in a registry per server (never the global one: tests run several).

Request counts and latencies are recorded by the HTTP layer; gauges that describe live state
(actors alive, mailbox depth, storage transactions) are refreshed when ``/metrics`` is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
        self.messages_sent = Counter(
            "fechatter_messages_sent", "messages committed", registry=self.registry
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
