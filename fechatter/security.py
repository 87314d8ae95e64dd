"""Whether a verified access token still stands for a live session of an active user.

A JWT proves who signed it and when it expires, nothing else: after a logout everywhere, a
password change or a suspension, its user's old tokens must stop working within seconds, on
every process that serves the user — also when the change was made by another process (an
admin command line, another node). The mechanism is a per-user **security version** in the
database: tokens carry the version they were issued under (``sv``), a change raises it and
appends to ``security_changes``, and every process follows that log.

``TokenGuard`` keeps each user's current state in a bounded in-memory map, so the check on the
request path is a dictionary lookup; a user it does not know yet (just signed up on another
process) is read from the database once. ``serve_follower`` polls the change log and, for a
user whose version rose, closes their open streams through the ``on_revoke`` callback (the
realtime layer passes one in; this module must never import a transport). A token issued under
a newer version than the map holds (a sign-in after a reactivation, on any process) makes
``check`` read the user again rather than wait for the poll; sign-in and refresh also
``apply`` the state they read, so the process that issued the token knows it at once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import trio

from fechatter.auth import AccessClaims
from fechatter.errors import Unauthorized, Unavailable
from fechatter.models import SecurityState, format_time
from fechatter.storage import Storage

log = logging.getLogger(__name__)

# Users whose state is cached; past it the least recently seen is forgotten (its next
# request reads the database once more). 100k states cost about 15 MB.
DEFAULT_CAPACITY = 100_000
# How far back each poll re-reads the change log: ids are handed out at insert and may
# commit out of order across processes, but no write transaction lasts this long.
LOOKBACK = timedelta(seconds=30)

RevokeCallback = Callable[[int, int], object]
"""``on_revoke(user_id, version)``: close the user's streams opened under an older version."""


class TokenGuard:
    """The per-process view of every user's security version."""

    def __init__(
        self,
        storage: Storage,
        *,
        on_revoke: RevokeCallback | None = None,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._storage = storage
        self._on_revoke = on_revoke
        self._capacity = capacity
        self._states: OrderedDict[int, SecurityState] = OrderedDict()

    async def check(self, claims: AccessClaims) -> SecurityState:
        """The user's state if ``claims`` still stand; else ``Unauthorized``.

        Raises ``Unauthorized`` with code ``invalid_token`` (no such user), ``token_revoked``
        (issued under an older security version) or ``account_suspended``; ``Unavailable``
        when the database is needed and does not answer.
        """
        state = self._states.get(claims.user_id)
        if state is None or claims.security_version > state.version:
            # Unknown here, or the token is newer than what is known: it was issued (here or
            # on another process) after a change this process has not polled yet — a user
            # reactivated and signed in again must not be refused until the next poll.
            state = await self.load(claims.user_id)
        else:
            self._states.move_to_end(claims.user_id)
        if claims.security_version < state.version:
            raise Unauthorized("this token was revoked; sign in again", code="token_revoked")
        if not state.active:
            raise Unauthorized("this account is suspended", code="account_suspended")
        return state

    async def load(self, user_id: int) -> SecurityState:
        """Read the user's state from the database into the map; ``Unauthorized`` if the
        user does not exist."""
        state = await self._storage.security_state(user_id)
        if state is None:
            raise Unauthorized("invalid token", code="invalid_token")
        return self.apply(state)

    def apply(self, state: SecurityState) -> SecurityState:
        """Record a state (read, or changed here or elsewhere); versions only rise, so the
        newer of what is known and what arrived wins. Closes streams of a raised version."""
        known = self._states.get(state.user_id)
        if known is not None and known.version > state.version:
            return known
        self._states[state.user_id] = state
        self._states.move_to_end(state.user_id)
        while len(self._states) > self._capacity:
            self._states.popitem(last=False)
        if known is None or state.version > known.version or not state.active:
            # Streams opened under an older version (or any, for a suspended user) close;
            # for a user with none open this is one dictionary miss in the hub.
            self._revoke(state)
        return state

    async def revoke_all(self, user_id: int) -> SecurityState:
        """Void every access token and refresh token of the user now (here) and, through
        the change log, everywhere within a poll interval."""
        return self.apply(await self._storage.raise_security_version(user_id))

    def _revoke(self, state: SecurityState) -> None:
        if self._on_revoke is not None:
            self._on_revoke(state.user_id, state.version if state.active else 2**63 - 1)

    async def serve_follower(
        self,
        interval: float,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Follow the change log every ``interval`` seconds until cancelled.

        A poll that fails (database unavailable) is logged and retried at the next tick;
        meanwhile tokens are checked against what is known.
        """
        cursor = await self._storage.last_security_change()
        task_status.started()
        while True:
            await trio.sleep(interval)
            since = format_time(datetime.now(UTC) - LOOKBACK)
            try:
                changes = await self._storage.security_changes(cursor, since)
            except Unavailable:
                log.warning("security change log unreadable; retrying in %.1f s", interval)
                continue
            for change in changes:
                cursor = max(cursor, change.id)
                self.apply(change.state)
