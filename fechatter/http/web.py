"""The browser client: ``/`` and ``/static/*`` from the package's ``web/`` folder, plus
``/api/client-config`` telling the page where the realtime listener is.

Pages get a strict Content-Security-Policy (scripts and styles only from this origin, network
only to the API and the realtime listener), a second line of defence behind the client's
text-only rendering of user content.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from quart import Blueprint, Quart, Response, request

from fechatter.errors import NotFound
from fechatter.http.apidoc import ClientConfigOut, doc
from fechatter.http.common import Context, json_response

WEB = Path(str(resources.files("fechatter") / "web"))
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def register(app: Quart, ctx: Context) -> None:
    """Add the web client routes to ``app``."""
    bp = Blueprint("web", __name__)
    files = {p.name: p for p in WEB.iterdir() if p.is_file() and p.suffix in TYPES}

    def realtime_origins() -> tuple[str, str]:
        if ctx.settings.public_realtime_url:
            base = ctx.settings.public_realtime_url.rstrip("/")
        else:
            host = request.host.rsplit(":", 1)[0] if request.host else ctx.settings.host
            base = f"{request.scheme}://{host}:{ctx.realtime_port}"
        ws = base.replace("https://", "wss://").replace("http://", "ws://")
        return base, ws

    def page(name: str) -> Response:
        path = files.get(name)
        if path is None:
            raise NotFound("no such file", code="route_not_found")
        response = Response(path.read_bytes(), content_type=TYPES[path.suffix])
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if path.suffix == ".html":
            http_rt, ws_rt = realtime_origins()
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; script-src 'self'; style-src 'self'; "
                "img-src 'self' data: https:; "
                f"connect-src 'self' {http_rt} {ws_rt}; "
                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
            )
            response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @bp.get("/")
    async def index() -> Response:
        return page("index.html")

    @bp.get("/invite/<token>")
    async def invite_page(token: str) -> Response:
        # The invite landing page is the app itself (web/invites.js reads the path); the
        # token never reaches a log (the access line logs the rule) nor a Referer.
        return page("index.html")

    @bp.get("/reset-password/<token>")
    async def reset_page(token: str) -> Response:
        return page("index.html")  # web/reset.js shows the form; as /invite/<token>

    @bp.get("/static/<name>")
    async def static(name: str) -> Response:
        return page(name)

    @bp.get("/api/client-config")
    @doc(
        "ops",
        "Where the browser client finds the realtime listener",
        ok={200: ClientConfigOut},
        auth=False,
    )
    async def client_config() -> Response:
        http_rt, ws_rt = realtime_origins()
        return json_response({"realtime_url": http_rt, "realtime_ws_url": ws_rt})

    app.register_blueprint(bp)
