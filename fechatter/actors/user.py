"""UserActor: the per-user end of the fan-out (skeleton until the realtime issue).

A ``UserHub`` is the ``EventSink`` the ChatActors publish to. It keeps one ``UserActor`` per
user with at least one live stream; events for users who are offline cost a dict lookup and
nothing else. Delivery is synchronous and non-blocking (the "fast lane"): it appends to the
user's bounded replay ring; the realtime listener adds the streams.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from fechatter.events import Event

DEFAULT_RING_SIZE = 1000


@dataclass(frozen=True, slots=True)
class HubStatistics:
    connected_users: int
    delivered: int


class UserActor:
    """One online user's recent events (bounded: the oldest fall off the ring)."""

    __slots__ = ("ring", "user_id")

    def __init__(self, user_id: int, ring_size: int = DEFAULT_RING_SIZE) -> None:
        self.user_id = user_id
        self.ring: deque[Event] = deque(maxlen=ring_size)

    def deliver_nowait(self, event: Event) -> None:
        self.ring.append(event)


class UserHub:
    """Online users by id; the ``EventSink`` of the actor system."""

    def __init__(self, ring_size: int = DEFAULT_RING_SIZE) -> None:
        self._ring_size = ring_size
        self._online: dict[int, UserActor] = {}
        self._delivered = 0

    def connect(self, user_id: int) -> UserActor:
        actor = self._online.get(user_id)
        if actor is None:
            actor = self._online[user_id] = UserActor(user_id, self._ring_size)
        return actor

    def disconnect(self, user_id: int) -> None:
        self._online.pop(user_id, None)

    def online(self, user_ids: Iterable[int]) -> list[int]:
        return [uid for uid in user_ids if uid in self._online]

    def publish(self, user_ids: Iterable[int], event: Event) -> None:
        online = self._online
        for uid in user_ids:
            actor = online.get(uid)
            if actor is not None:
                actor.deliver_nowait(event)
                self._delivered += 1

    def statistics(self) -> HubStatistics:
        return HubStatistics(len(self._online), self._delivered)
