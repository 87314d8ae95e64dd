"""Command line: ``fechatter serve`` and ``fechatter migrate``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence

import pydantic
import trio

from fechatter import cli_admin, cli_archive, cli_backup, cli_errors, logs
from fechatter.app import NatsUnreachable, ServerInfo, serve
from fechatter.bus.nats import NatsClientUnsupported
from fechatter.config import Settings, load_settings, unknown_environment
from fechatter.errors import Unavailable
from fechatter.logs import LOG_FORMATS
from fechatter.storage import open_storage

log = logging.getLogger("fechatter")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fechatter", description="Fechatter chat server")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (
        ("serve", "run the server"),
        ("demo", "seed a demo workspace (once), then run the server"),
        ("migrate", "apply schema migrations"),
    )
    for name, text in commands:
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", help="YAML config file (default ./app.yaml if present)")
        p.add_argument("--database-url", help="sqlite:///path (default sqlite:///fechatter.db)")
        p.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            help="log lines as json or text (default auto: text on a terminal, json otherwise)",
        )
        if name in ("serve", "demo"):
            p.add_argument("--host", help="listen address (default 127.0.0.1)")
            p.add_argument("--port", type=int, help="API port (default 6688)")
            p.add_argument("--demo", action="store_true", help="seed a demo workspace first (once)")
            p.add_argument("--realtime-port", type=int, help="SSE/WebSocket port (default 6687)")
            p.add_argument(
                "--node-id",
                help="this node's id, 1-64 of A-Z a-z 0-9 . _ - (default host-0-boot epoch;"
                " with --nats-url the boot epoch is appended: <id>.<boot>)",
            )
            p.add_argument(
                "--nats-url",
                help="cluster mode: nats://host:4222[,nats://…]; needs a PostgreSQL"
                " --database-url and FECHATTER_JWT_SECRET (docs/cluster.md)",
            )
            p.add_argument(
                "--role",
                choices=("all", "api", "realtime"),
                help="cluster node role: all (API + streams, default), api (API only),"
                " realtime (streams only); needs --nats-url or --workers",
            )
            p.add_argument(
                "--access-log",
                action="store_const",
                const=True,
                help="log one line per request on both listeners, secrets redacted"
                " (default off; setting access_log)",
            )
        if name == "serve":
            p.add_argument(
                "--workers",
                type=int,
                help="run N cluster nodes on this host sharing its ports; needs a PostgreSQL"
                " --database-url; starts a local nats-server without --nats-url",
            )
            # Internal: the --workers parent starts each child with its index.
            p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    cli_admin.register(sub)
    cli_backup.register(sub)
    cli_archive.register(sub)
    return parser


# Flags a --workers parent hands on to its children as given (ports: the reserved ones).
CHILD_FLAGS = (
    ("--config", "config"),
    ("--database-url", "database_url"),
    ("--log-format", "log_format"),
    ("--host", "host"),
    ("--node-id", "node_id"),
    ("--nats-url", "nats_url"),
    ("--role", "role"),
)


def _child_flags(args: argparse.Namespace) -> list[str]:
    flags: list[str] = []
    for flag, name in CHILD_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            flags += [flag, str(value)]
    if getattr(args, "access_log", None):
        flags.append("--access-log")
    return flags


async def _watch_parent(shutdown: trio.Event) -> None:
    """A ``--workers`` child: stdin is a pipe its parent never writes, so end of file means
    the parent is gone (killed or crashed): stop gracefully, as on SIGTERM. Portable, unlike
    ``PR_SET_PDEATHSIG`` (fechatter.workers)."""
    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
        while await stdin.receive_some(1024):
            pass
    if not shutdown.is_set():
        log.warning("the --workers parent is gone: shutting down gracefully")
        shutdown.set()


# Generation 0's collection threshold for a serving process (CPython's default is 700
# allocations less deallocations of tracked objects).
GC_THRESHOLD0 = 10_000


def tune_gc_after_start() -> int:
    """The garbage-collector policy of a serving process, applied once it has started (every
    module imported, the app, pools and listeners built): collect, freeze what is left (it
    lives as long as the process) into the permanent generation, and raise generation 0's
    threshold to ``GC_THRESHOLD0``. Returns the number of objects frozen.

    Why: a node keeps ~120,000 tracked objects alive, most of them from start-up, and every
    full (generation-2) collection re-scanned all of them; per-message objects are short-lived,
    and at 700 allocations many were promoted before they died. Measured with a probe of
    ``gc.callbacks`` in ``python -m bench run --cluster 2``: collections took 12-24 % of a
    node's CPU. With this policy (one alternating run of the same bench, µs of CPU per
    message in all processes, docs/api.md "Garbage collection"): one node 654/636 -> 608/549,
    a one-node cluster 1,171/1,147 -> 881/974. Sources: the ``gc.freeze`` documentation (the
    permanent generation is ignored by every collection) and Instagram's "Dismissing Python
    Garbage Collection at Instagram" (2017), which disabled the collector outright; we keep it
    on, so reference cycles are still freed. Process-wide, so only the ``serve`` command
    applies it (the test suite's in-process servers do not: freezing a test process would
    keep every later-unreachable object of the objects frozen)."""
    gc.collect()
    gc.freeze()
    _, threshold1, threshold2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD0, threshold1, threshold2)
    return gc.get_freeze_count()


async def _serve_until_signalled(settings: Settings) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    if shutdown.is_set():
                        log.warning("second signal: stopping now")
                        nursery.cancel_scope.cancel()
                        return
                    log.info("signal %s: shutting down gracefully", signal.Signals(signum).name)
                    shutdown.set()

        nursery.start_soon(watch_signals)
        if settings.worker_index is not None:
            nursery.start_soon(_watch_parent, shutdown)

        async def serve_then_stop(*, task_status: trio.TaskStatus[ServerInfo]) -> None:
            await serve(settings, shutdown, task_status=task_status)
            nursery.cancel_scope.cancel()

        await nursery.start(serve_then_stop)
        frozen = tune_gc_after_start()
        log.info(
            "garbage collector: %d start-up objects frozen, generation-0 threshold %d",
            frozen,
            GC_THRESHOLD0,
        )


async def _migrate(settings: Settings) -> None:
    async with open_storage(settings.database_url):
        pass  # opening a storage applies its pending migrations


def _one_line(exc: pydantic.ValidationError) -> str:
    """``setting: problem; …`` for each invalid setting (pydantic's own text spans lines)."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def load_cli_settings(args: argparse.Namespace, **overrides: object) -> Settings | None:
    """The settings of every command: ``--config`` and ``--database-url`` from ``args`` (and
    ``--log-format`` where the command has it), ``overrides`` (a command's own flags, e.g.
    ``files_dir``; ``None`` values are left out) winning over the file and the environment.

    A bad setting or a missing ``--config`` file is one line on stderr (``fechatter: bad
    configuration: <setting>: <problem>``) and ``None``: the caller exits 2. Never a traceback.
    """
    flags = {
        "database_url": args.database_url,
        "log_format": getattr(args, "log_format", None),
        **overrides,
    }
    try:
        return load_settings(args.config, **flags)
    except pydantic.ValidationError as exc:
        print(f"fechatter: bad configuration: {_one_line(exc)}", file=sys.stderr)
    except (FileNotFoundError, ValueError) as exc:
        print(f"fechatter: bad configuration: {exc}".splitlines()[0], file=sys.stderr)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flags: dict[str, object] = {}
    if args.command in cli_archive.COMMANDS:
        flags.update(files_dir=args.files_dir)
    if args.command in ("serve", "demo"):
        flags.update(
            host=args.host,
            port=args.port,
            realtime_port=args.realtime_port,
            node_id=args.node_id,
            nats_url=args.nats_url,
            role=args.role,
            access_log=args.access_log,
            workers=getattr(args, "workers", None),
            worker_index=getattr(args, "worker_index", None),
        )
    settings = load_cli_settings(args, **flags)
    if settings is None:
        return 2
    logs.configure(settings.log_format, level=logging.getLevelNamesMapping()[settings.log_level])
    if settings.worker_index is None:  # a --workers child inherits the parent's, warned once
        for line in unknown_environment(os.environ):
            log.warning("%s", line)
    if args.command in cli_archive.COMMANDS:
        return cli_archive.run(args, settings)
    if args.command in ("admin", "backup", "restore"):
        run = cli_admin.run if args.command == "admin" else cli_backup.run
        return run(args, settings)
    if args.command == "migrate":
        unreachable: str | None = None
        try:
            trio.run(_migrate, settings)
        except* Unavailable as group:
            leaf = cli_errors.leaves(group)[0]
            assert isinstance(leaf, Unavailable)
            unreachable = cli_errors.database_error(leaf, settings.database_url)
        if unreachable is not None:
            print(f"fechatter migrate: {unreachable}", file=sys.stderr)
            return 1
        print(f"migrations applied to {settings.database_url}")
        return 0
    # Before the database is opened (or created): a taken port is one line, no files. Not for
    # --workers: the parent and its children share the ports on purpose (SO_REUSEPORT).
    shared = settings.workers is not None or settings.worker_index is not None
    serving = args.command in ("serve", "demo") and not shared
    taken = cli_errors.ports_in_use(settings) if serving else []
    if taken:
        print(cli_errors.in_use_line(settings, taken), file=sys.stderr)
        return 1
    if args.command == "demo" or getattr(args, "demo", False):
        from fechatter import demo

        demo.run_seed(settings)
        print(demo.instructions(settings), file=sys.stderr, flush=True)
    if args.command == "serve" and settings.workers is not None and settings.worker_index is None:
        from fechatter.workers import run_workers

        return run_workers(settings, _child_flags(args))
    in_use = False
    no_nats: str | None = None
    no_database: str | None = None
    try:
        trio.run(_serve_until_signalled, settings)
    except* OSError as group:
        # A port taken is the operator's to fix: one line naming the flags, no traceback
        # (taken since ``ports_in_use`` looked; nested: trio nurseries on the way out).
        if not cli_errors.address_in_use(group):
            raise
        in_use = True
    except* Unavailable as group:
        # The database does not answer at start: where and why, on one line.
        leaf = cli_errors.leaves(group)[0]
        assert isinstance(leaf, Unavailable)
        no_database = cli_errors.database_error(leaf, settings.database_url)
    except* (NatsUnreachable, NatsClientUnsupported) as group:
        # Cluster mode: NATS not reachable at start, or a nats-py other than the pinned line
        # (bus/nats.py check_nats_internals), is the operator's to fix, like a port.
        no_nats = str(cli_errors.leaves(group)[0])
    if no_database is not None:
        print(f"fechatter: {no_database}", file=sys.stderr)
        return 1
    if no_nats is not None:
        print(f"fechatter: {no_nats} (--nats-url)", file=sys.stderr)
        return 1
    if in_use:
        print(cli_errors.in_use_line(settings), file=sys.stderr)
        return 1
    return 0
