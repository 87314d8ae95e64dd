"""``serve(settings)``: storage ⊃ actor system ⊃ listeners, nested by lifetime.

Shutdown (the ``shutdown`` event, set by SIGINT/SIGTERM in the CLI) stops the listeners from
accepting, lets in-flight requests finish within ``shutdown_grace`` seconds, then stops the
actors (a commit already handed to storage completes) and closes storage.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from functools import partial

import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig

from fechatter.actors.directory import DirectoryConfig
from fechatter.actors.supervisor import open_actor_system
from fechatter.auth import Authenticator
from fechatter.config import Settings, resolve_jwt_secret
from fechatter.http import create_app
from fechatter.http.asgi import ShieldedSend
from fechatter.http.common import Context
from fechatter.metrics import Metrics
from fechatter.ratelimit import RateLimiter
from fechatter.storage import open_storage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """Where a started server listens (ports resolved when 0 was asked for)."""

    api_url: str


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # pragma: no cover - platform refusal
            log.warning("could not raise the open-files limit above %d", soft)
    return soft


def build_authenticator(settings: Settings) -> Authenticator:
    return Authenticator(
        resolve_jwt_secret(settings),
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
        hash_threads=settings.hash_threads,
    )


def directory_config(settings: Settings) -> DirectoryConfig:
    return DirectoryConfig(
        mailbox_size=settings.chat_mailbox_size,
        group_commit_max=settings.group_commit_max,
        idle_seconds=settings.chat_idle_seconds,
        restart_budget=settings.actor_restart_budget,
        restart_window=settings.actor_restart_window,
        call_timeout=settings.actor_call_timeout,
        typing_ttl=settings.typing_ttl,
    )


async def serve(
    settings: Settings,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a Fechatter server until ``shutdown`` is set."""
    limit = raise_fd_limit()
    auth = build_authenticator(settings)
    async with (
        open_storage(settings.database_url) as storage,
        open_actor_system(storage, directory_config(settings)) as system,
    ):
        ctx = Context(
            settings=settings,
            storage=storage,
            system=system,
            auth=auth,
            send_limiter=RateLimiter(settings.send_rate, settings.send_burst, trio.current_time),
            metrics=Metrics(),
        )
        config = HypercornConfig()
        config.bind = [f"{settings.host}:{settings.port}"]
        config.backlog = settings.backlog
        config.keep_alive_timeout = settings.keep_alive_timeout
        config.graceful_timeout = settings.shutdown_grace
        config.accesslog = None
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(
                    hypercorn.trio.serve,
                    ShieldedSend(create_app(ctx)),
                    config,
                    shutdown_trigger=shutdown.wait,
                )
            )
            log.info("fechatter API on %s (open-files limit %d)", binds[0], limit)
            task_status.started(ServerInfo(api_url=binds[0]))
