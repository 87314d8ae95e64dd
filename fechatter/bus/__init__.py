"""The message bus between cluster nodes: ``Bus`` (protocol), ``open_nats_bus`` (NATS).

Infrastructure under the actors (the storage layer): it imports only layer-0 modules.
Why nats-py runs on its own asyncio thread, and the measurements: ``docs/cluster.md``
("NATS client on trio").
"""

from __future__ import annotations

from fechatter.bus.base import (
    Bus,
    BusState,
    ChainResult,
    Gap,
    JsPublish,
    Message,
    NoResponders,
    PublishAck,
    RequestTimeout,
    StoredMessage,
    StreamPage,
    Subscription,
    SubscriptionStatistics,
)
from fechatter.bus.nats import NatsBus, open_nats_bus

__all__ = [
    "Bus",
    "BusState",
    "ChainResult",
    "Gap",
    "JsPublish",
    "Message",
    "NatsBus",
    "NoResponders",
    "PublishAck",
    "RequestTimeout",
    "StoredMessage",
    "StreamPage",
    "Subscription",
    "SubscriptionStatistics",
    "open_nats_bus",
]
