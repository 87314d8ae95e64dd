"""User status, profiles and per-chat mute (issue 14 part B, SPEC §7; docs/api.md "User
status, profiles and mute").

``UserStatuses`` is the one place these rules live:

- **status**: ``set_status`` stores the chosen status (``StatusStore``) and asks the hub to
  announce the user's shown status again (``UserHub.announce_status``: one process, or every
  node through the ``PresencePort``); the hub builds every ``presence`` event's data with
  ``presence_data`` (installed as ``UserHub.presence_data_of``), so flips online/offline carry
  the chosen status too.
- **expiry**: ``serve_expiry`` (a task owned by the server's nursery) sleeps until the
  earliest stored ``expires_at`` (at most ``SWEEP_EVERY`` s), deletes the lapsed rows
  (``StatusStore.expire``: of several nodes, one gets each row) and announces them. A status
  set here wakes it at once; one set on another node is seen within ``SWEEP_EVERY`` s at
  worst (that node's own timer normally announces it first).
- **profiles**: ``profile`` shows a user to anyone sharing a workspace with them (else 404).
- **mute**: ``set_muted`` stores the member's mute and sends ``chat.muted`` to their own
  streams (``PublishToUser``: every node in a cluster).

Times come from a ``WallClock`` (``fechatter.status``), injected for tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from fechatter import events
from fechatter.actors.user import UserHub
from fechatter.domain.chats import Chats
from fechatter.errors import Forbidden, NotFound, Unavailable
from fechatter.events import Event
from fechatter.models import Chat
from fechatter.status import ChosenStatus, WallClock, epoch_to_rfc3339, presence_event, shown
from fechatter.storage import Storage
from fechatter.storage.status import StatusStore

log = logging.getLogger(__name__)

SWEEP_EVERY = 30.0  # seconds between expiry passes at most (lapses set on other nodes)
# An ephemeral event for one user's own streams (every node's in a cluster).
PublishToUser = Callable[[int, Event], None]


class UserStatuses:
    """Status, profile and mute use cases; run ``serve_expiry`` for its lifetime."""

    def __init__(
        self,
        storage: Storage,
        hub: UserHub,
        chats: Chats,
        clock: WallClock,
        publish_to_user: PublishToUser | None = None,
    ) -> None:
        """``publish_to_user`` (cluster mode): ``ClusterEvents.publish_to_user``; else the
        hub delivers to this process's streams. Installs ``presence_data`` on the hub."""
        self._storage = storage
        self.store = StatusStore(storage)
        self._hub = hub
        self._chats = chats
        self._clock = clock
        self._publish_to_user = publish_to_user or (lambda uid, ev: hub.publish([uid], ev))
        self._wake = trio.Event()
        hub.presence_data_of = self.presence_data

    # -- status ---------------------------------------------------------------------------
    async def set_status(
        self, user_id: int, status: str | None, text: str | None, expires_in: int | None
    ) -> dict[str, Any]:
        """Choose ``away``/``busy`` (optional ``text``; ``expires_in`` seconds > 0, else until
        cleared) or, with ``status`` None, return to automatic presence. Returns the chosen
        status as stored: ``{status: "away"|"busy"|null, text, expires_at}``. Raises
        ``Unavailable``."""
        if status is None:
            await self.store.clear(user_id)
            self._hub.announce_status(user_id)
            return {"status": None, "text": None, "expires_at": None}
        expires_at = None if expires_in is None else self._clock() + expires_in
        await self.store.set(user_id, status, text, expires_at)
        self._hub.announce_status(user_id)
        if expires_at is not None:
            self._wake.set()  # the expiry timer recomputes its next wake-up
        return {
            "status": status,
            "text": text,
            "expires_at": None if expires_at is None else epoch_to_rfc3339(expires_at),
        }

    async def chosen(self, user_id: int) -> ChosenStatus | None:
        """``user_id``'s chosen status if it has not expired. Raises ``Unavailable``."""
        return (await self.store.chosen([user_id], self._clock())).get(user_id)

    async def presence_data(self, user_id: int, online: bool) -> dict[str, Any]:
        """The ``presence`` event data for ``user_id`` (``fechatter.status.presence_event``);
        the hub's ``PresenceData``. Raises ``Unavailable``."""
        chosen = await self.chosen(user_id) if online else None
        return presence_event(user_id, online, chosen, self._clock())

    async def shown_of(self, user_ids: list[int], online: set[int]) -> dict[int, dict[str, Any]]:
        """``{user_id: {status, text, expires_at}}`` for those of ``online`` among
        ``user_ids`` who show a chosen status (one query). Raises ``Unavailable``."""
        ids = [uid for uid in user_ids if uid in online]
        now = self._clock()
        chosen = await self.store.chosen(ids, now)
        return {uid: shown(True, c, now) for uid, c in chosen.items()}

    # -- profiles -------------------------------------------------------------------------
    async def profile(self, caller: int, user_id: int) -> dict[str, Any]:
        """``GET /api/users/:id``: the User plus ``presence: {status, text, expires_at}``, for
        the user themself or anyone sharing a workspace with them; else ``NotFound``
        (``user_not_found``, the same answer as for no such user). Raises ``Unavailable``."""
        if caller != user_id and not await self.store.share_workspace(caller, user_id):
            raise NotFound("user not found", code="user_not_found")
        user = await self._storage.get_user(user_id)
        if user is None:
            raise NotFound("user not found", code="user_not_found")
        online = bool(await self._hub.online_anywhere([user_id]))
        chosen = await self.chosen(user_id) if online else None
        return {**user.to_json(), "presence": shown(online, chosen, self._clock())}

    # -- mute -----------------------------------------------------------------------------
    async def set_muted(self, user_id: int, chat_id: int, muted: bool) -> Chat:
        """The member mutes or unmutes the chat for themself; the chat as they see it now.
        Their own streams get ``chat.muted`` ``{chat_id, muted}`` (every call, changed or
        not). Raises ``NotFound`` (not visible to them), ``Forbidden`` (``not_a_member``:
        a PublicChannel they have not joined), ``Unavailable``."""
        _, role = await self._chats.visible(chat_id, user_id)
        if role is None:
            raise Forbidden("join the channel first", code="not_a_member")
        if not await self.store.set_muted(chat_id, user_id, muted):
            raise NotFound("chat not found", code="chat_not_found")  # left meanwhile
        view = await self._chats.view(chat_id, user_id)
        self._publish_to_user(
            user_id, Event(events.CHAT_MUTED, {"chat_id": chat_id, "muted": muted})
        )
        return view

    # -- expiry ---------------------------------------------------------------------------
    async def expire_once(self) -> float | None:
        """One pass: delete the statuses lapsed by now and announce each; returns the next
        stored expiry (epoch seconds) or None. Raises ``Unavailable``."""
        for user_id in await self.store.expire(self._clock()):
            self._hub.announce_status(user_id)
        return await self.store.next_expiry()

    async def serve_expiry(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Announce lapsed statuses when they lapse, until cancelled (never raises but
        cancellation: storage trouble is logged and retried after ``SWEEP_EVERY`` s)."""
        task_status.started()
        while True:
            self._wake = trio.Event()
            try:
                after = await self.expire_once()
            except Unavailable as exc:
                log.warning("status expiry pass skipped: %s", exc)
                after = None
            except Exception:
                log.exception("status expiry pass failed")
                after = None
            now = self._clock()
            wait = SWEEP_EVERY if after is None else min(SWEEP_EVERY, after - now)
            with trio.move_on_after(max(0.0, wait)):
                await self._wake.wait()
