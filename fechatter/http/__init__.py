"""The API listener's application: ``create_app(ctx)`` builds a quart-trio app, no globals.

Every error leaves as an RFC 9457 problem document: domain errors by their status, framework
errors (unknown route, wrong method, body too large) translated, and anything unexpected as
a 500 that reveals nothing (it is logged with its traceback instead).
"""

from __future__ import annotations

import logging
import time

from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from fechatter.errors import (
    BadRequest,
    FechatterError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from fechatter.http import (
    auth_routes,
    chats,
    files,
    invites,
    messages,
    openapi,
    ops,
    password_resets,
    reactions,
    search,
    users,
    web,
    workspaces,
)
from fechatter.http.common import Context, IdConverter, json_response

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
STREAM_ONLY_DETAIL = (
    "this node has role realtime: it serves streams only (and /health, /ready, /metrics,"
    " /api/sse/health); send API requests to a node with role api or all"
)


def problem_response(error: FechatterError) -> Response:
    response = json_response(error.problem(), error.status)
    response.content_type = PROBLEM
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _translate(exc: HTTPException) -> FechatterError:
    code = exc.code or 500
    if code == 404:
        return NotFound("no such route", code="route_not_found")
    if code == 405:
        return MethodNotAllowed("method not allowed on this route")
    if code == 413:
        return PayloadTooLarge("request body is too large", code="body_too_large")
    if 400 <= code < 500:
        return BadRequest(exc.description or "bad request")
    return FechatterError("internal error")


def _body_complete() -> bool:
    """Whether the whole request body has arrived, so the connection can serve another request.

    True for a request that has no body by its HTTP/1 framing (no ``Transfer-Encoding``, no
    ``Content-Length`` above 0: GET, HEAD, a bodiless DELETE): the server's parser has already
    seen its end. That cannot be read from quart's body, which learns of the end from a task
    running beside the handler, so a handler that answers without waiting (``/health``)
    finishes first and the body still looks incomplete. For a request with a body, quart's
    completion flag (``Body._complete``: set when the last ``http.request`` message arrived,
    or when the body overflowed ``MAX_CONTENT_LENGTH``) decides, and an overflow
    (``Body._must_raise``) counts as incomplete: the rest of that body was never read.
    """
    body = request.body
    if getattr(body, "_must_raise", None) is not None:
        return False
    complete = getattr(body, "_complete", None)
    if complete is not None and complete.is_set():
        return True
    if "Transfer-Encoding" in request.headers:
        return False
    return not request.content_length  # None or 0: no body to wait for


def create_app(ctx: Context) -> QuartTrio:
    """Build the API application around an already-running storage and actor system.

    A cluster node with role ``realtime`` serves streams only: its API port answers the
    operational routes (``/health``, ``/ready``, ``/metrics``, ``/api/sse/health``, and
    ``/api/online-users``, all in ``ops``) for load balancers and monitoring, and any other
    route with 404 ``route_not_found`` naming the role (docs/cluster.md §1)."""
    stream_only = ctx.settings.role == "realtime"
    app = QuartTrio("fechatter", static_folder=None)
    app.url_map.converters["id"] = IdConverter
    app.config.update(
        MAX_CONTENT_LENGTH=ctx.settings.max_body_bytes,
        RESPONSE_TIMEOUT=None,
        BODY_TIMEOUT=30,
        PROPAGATE_EXCEPTIONS=False,
    )

    @app.errorhandler(FechatterError)
    async def on_domain_error(error: FechatterError) -> Response:
        return problem_response(error)

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        if error.code == 404 and stream_only:
            return problem_response(NotFound(STREAM_ONLY_DETAIL, code="route_not_found"))
        response = problem_response(_translate(error))
        if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    async def on_bug(error: Exception) -> Response:
        # The route's rule, not the path: paths may carry secrets (invite tokens).
        where = request.url_rule.rule if request.url_rule is not None else "unmatched"
        log.error("unhandled error on %s %s", request.method, where, exc_info=error)
        return problem_response(FechatterError("internal error"))

    @app.before_request
    async def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    async def record(response: Response) -> Response:
        if not _body_complete():
            # Answered before the body arrived (413, 401, ...): hypercorn would never recycle
            # this keep-alive connection and the client's next request would hang, so close it.
            response.headers["Connection"] = "close"
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - getattr(g, "started", time.perf_counter())
        ctx.metrics.requests.labels(request.method, rule, str(response.status_code)).inc()
        ctx.metrics.latency.labels(request.method, rule).observe(elapsed)
        # No access line here: ``--access-log`` (fechatter.http.access) is the one mechanism,
        # redacted; a second, DEBUG one would be a second place for a secret to slip through.
        return response

    ops.register(app, ctx)
    if stream_only:
        return app
    auth_routes.register(app, ctx)
    workspaces.register(app, ctx)
    invites.register(app, ctx)
    password_resets.register(app, ctx)
    chats.register(app, ctx)
    messages.register(app, ctx)
    reactions.register(app, ctx)
    search.register(app, ctx)
    web.register(app, ctx)
    if ctx.files is not None:
        files.register(app, ctx, ctx.files)
    if ctx.statuses is not None:
        users.register(app, ctx, ctx.statuses)
    openapi.register(app, ctx)  # last: it documents the routes registered above
    return app
