"""``GET /openapi.json`` (OpenAPI 3.1 of the HTTP API, generated from the routes) and the
docs page ``GET /docs`` with its vendored Swagger UI (docs/api.md "OpenAPI").

The description is built by quart-schema's ``OpenAPIProvider`` from the ``apidoc.doc``
attributes on the handlers, once, on the first request (every route is registered by then).
quart-schema is used for generation only: ``QuartSchema.init_app`` is never called, so it
installs no JSON provider, wraps no response, validates nothing and registers none of its
CDN-backed docs pages. Routes without ``doc`` (the web client's pages, the docs page itself)
are left out; the file routes served by the ASGI layer (``http/files.py``) are not quart
rules and are added by hand here. This module must never change how a request is handled.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from quart import Blueprint, Quart, Response, request
from quart_schema import QuartSchema
from quart_schema.openapi import OpenAPIProvider
from werkzeug.routing import BaseConverter, Rule

from fechatter.errors import NotFound
from fechatter.http.apidoc import DOC_ATTRIBUTE, FileOut, Problem
from fechatter.http.common import Context, IdConverter
from fechatter.http.web import WEB
from fechatter.schemas import MAX_ID

PROBLEM = "application/problem+json"
VENDOR = WEB / "vendor"
# The vendored files the docs page loads (fechatter/web/vendor/README.md), and their types.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
# The vendored files change only with a release; a day of caching, then an ETag revalidation.
VENDOR_CACHE = "public, max-age=86400"
PAGE = WEB / "apidocs.html"
INIT = WEB / "apidocs.js"
# The docs page loads only this origin's files; the spec and "Try it out" go to this origin.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)

# What each problem status means on this API (SPEC §1).
ERROR_MEANING = {
    400: "malformed JSON, wrong content type, or a bad query parameter (named in `errors`)",
    401: "missing, malformed, expired or revoked token (`WWW-Authenticate: Bearer`)",
    403: "a member whose role does not allow this",
    404: "no such resource, or the caller may not know it exists",
    408: "the upload did not arrive within the upload timeout",
    409: "a uniqueness conflict (email, workspace or channel name taken)",
    413: "body larger than the limit (or, for uploads, the file or quota limit)",
    422: "well-formed but invalid input; `errors` names each field",
    429: "rate limited; retry after `Retry-After` seconds",
    503: "storage, bus or password hashing unavailable; retry after `Retry-After`; nothing"
    " was written",
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"schema": {"type": "string"}}}


class Provider(OpenAPIProvider):
    """quart-schema's generator, taught our ``<id:…>`` converter and ``apidoc.doc``."""

    def generate_rules(self) -> Iterable[Rule]:
        """Only the rules whose handler carries ``apidoc.doc`` (the API), sorted by path."""
        rules = [
            rule
            for rule in super().generate_rules()
            if hasattr(self._app.view_functions[rule.endpoint], DOC_ATTRIBUTE)
        ]
        return sorted(rules, key=lambda r: r.rule)

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        """An ``<id:…>`` segment is an integer 1..2^63-1; others as quart-schema says."""
        if isinstance(converter, IdConverter):
            schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
            return {"name": name, "in": "path", "required": True, "schema": schema}
        return super().build_path_parameter(name, converter)

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        """quart-schema's path objects, completed from ``apidoc.doc``: summary, tag,
        operation id, security, no-content and problem responses."""
        paths, components = super().build_paths(rule)
        info = getattr(self._app.view_functions[rule.endpoint], DOC_ATTRIBUTE)
        for path_object in paths.values():
            for method, operation in list(path_object.items()):
                op = copy.deepcopy(operation)
                op["operationId"] = rule.endpoint.replace(".", "_")
                if len(path_object) > 1:
                    op["operationId"] += f"_{method}"
                op["summary"] = info["summary"]
                op["tags"] = [info["tag"]]
                op.pop("description", None)
                if not info["auth"]:
                    op["security"] = []
                if "requestBody" in op:
                    op["requestBody"]["required"] = True
                responses = {str(status): body for status, body in op["responses"].items()}
                for status, media_type in info["text"].items():
                    responses[str(status)] = {
                        "description": info["summary"],
                        "content": {media_type: {"schema": {"type": "string"}}},
                    }
                for status in info["empty"]:
                    responses[str(status)] = {"description": "no content"}
                for status in info["errors"]:
                    responses[str(status)] = {"$ref": f"#/components/responses/Problem{status}"}
                op["responses"] = responses
                path_object[method] = op
        return paths, components

    def build_response_object(
        self, model: Any, headers_model: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """quart-schema's, with a list's description taken from its items' model (not the
        docstring of ``list``)."""
        response, components = super().build_response_object(model, headers_model)
        if get_origin(model) is list:
            (item,) = get_args(model)
            doc = inspect.getdoc(item) or item.__name__
            response["description"] = f"A list, each: {doc[0].lower()}{doc[1:]}"
        return response, components

    def operation_id(self, method: str, path: str, func: Any) -> str | None:
        """Set in ``build_paths`` (from the endpoint's name)."""
        return None


def _problem_responses() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, meaning in ERROR_MEANING.items():
        response: dict[str, Any] = {
            "description": meaning,
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if status in (429, 503):
            response["headers"] = RETRY_AFTER
        if status == 401:
            response["headers"] = WWW_AUTHENTICATE
        out[f"Problem{status}"] = response
    return out


def _problem_refs(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/Problem{s}"} for s in statuses}


def _file_paths() -> dict[str, Any]:
    """The ASGI file routes of ``http/files.py`` (not quart rules)."""
    file_id = {
        "name": "file_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
    }
    signed = [
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"},
         "description": "signed URL part (POST /api/files/sign); instead of a bearer token"}
        for n in ("uid", "exp", "sig")
    ]  # fmt: skip
    bytes_ok = {
        "200": {
            "description": "the bytes (`Content-Disposition: attachment` unless a safe image)",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        "206": {
            "description": "the requested `Range`",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        "304": {"description": "not modified (`If-None-Match`)"},
        "416": {"description": "the `Range` cannot be satisfied"},
        **_problem_refs(401, 404, 503),
    }
    download = {
        "tags": ["files"],
        "parameters": [file_id, *signed],
        "responses": bytes_ok,
        # A bearer token, or none with a signed URL's query parameters.
        "security": [{"bearer": []}, {}],
    }
    upload = {
        "tags": ["files"],
        "operationId": "files_upload",
        "summary": "Upload a file (multipart/form-data, one part named file)",
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        },
        "responses": {
            "201": {
                "description": FileOut.__doc__,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/FileOut"}}
                },
            },
            **_problem_refs(400, 401, 408, 413, 422, 429, 503),
        },
    }
    return {
        "/api/files": {"post": upload},
        "/files/{file_id}": {
            "get": {**download, "operationId": "files_download", "summary": "Download a file"},
        },
        "/files/{file_id}/thumbnail": {
            "get": {
                **download,
                "operationId": "files_thumbnail",
                "summary": "Download an image's thumbnail (JPEG or PNG, ≤ 400 px)",
            },
        },
    }


def build_spec(app: Quart, files: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 description of ``app``'s documented routes (plus the file routes
    when ``files``) as a JSON-ready dict."""
    app.config.setdefault("QUART_SCHEMA_CONVERSION_PREFERENCE", None)
    app.config.setdefault("QUART_SCHEMA_CONVERT_CASING", False)
    extension = QuartSchema(
        openapi_path=None,
        info={
            "title": "Fechatter",
            "version": "1",
            "description": "The HTTP API of Fechatter (SPEC). Errors are RFC 9457 problem"
            " documents. Realtime streams (SSE, WebSocket) are on the realtime listener and"
            " are not described here.",
        },
        security_schemes={"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
        security=[{"bearer": []}],
    )
    spec = Provider(app, extension).schema()
    spec["paths"] = dict(spec["paths"])
    components = spec["components"]
    components["schemas"]["Problem"] = _inline(Problem)
    components["responses"] = _problem_responses()
    if files:
        components["schemas"]["FileOut"] = _inline(FileOut)
        spec["paths"].update(_file_paths())
    spec["paths"] = dict(sorted(spec["paths"].items()))
    return spec


def _inline(model: type[Problem] | type[FileOut]) -> dict[str, Any]:
    """``model``'s schema with its nested definitions inlined (no ``$defs`` to place)."""
    schema = model.model_json_schema(mode="serialization")
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


@dataclass(frozen=True, slots=True)
class Asset:
    """A docs file read once at registration: its bytes, type and strong ETag."""

    body: bytes
    content_type: str
    etag: str
    cache_control: str

    @classmethod
    def read(cls, path: Path, content_type: str, cache_control: str) -> Asset:
        body = path.read_bytes()
        return cls(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"', cache_control)

    def response(self) -> Response:
        """The file, or ``304 Not Modified`` when the client's ``If-None-Match`` has it."""
        matched = self.etag in request.headers.get("If-None-Match", "")
        response = Response(b"" if matched else self.body, content_type=self.content_type)
        if matched:
            response.status_code = 304
        response.headers["ETag"] = self.etag
        response.headers["Cache-Control"] = self.cache_control
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def register(app: Quart, ctx: Context) -> None:
    """Add ``/openapi.json``, ``/docs`` (``/docs/`` redirects there) and
    ``/docs/vendor/<name>`` to ``app``. The page and its files are read here, once (the
    Swagger bundle is 1.7 MB: never read per request on the event loop), and served with a
    strong ETag; the vendored files may be cached a day (``VENDOR_CACHE``), the page and its
    script are revalidated (``no-cache``: a 304 when unchanged)."""
    bp = Blueprint("openapi", __name__)
    built: list[bytes] = []  # the description, encoded once on first use
    page = Asset.read(PAGE, "text/html; charset=utf-8", "no-cache")
    init = Asset.read(INIT, "text/javascript; charset=utf-8", "no-cache")
    vendored = {
        name: Asset.read(VENDOR / name, kind, VENDOR_CACHE) for name, kind in ASSETS.items()
    }

    @bp.get("/openapi.json")
    async def openapi() -> Response:
        if not built:
            spec = build_spec(app, files=ctx.files is not None)
            built.append(json.dumps(spec, separators=(",", ":"), ensure_ascii=False).encode())
        response = Response(built[0], content_type="application/json")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @bp.get("/docs/")
    async def docs_slash() -> Response:
        response = Response(b"", status=308)
        response.headers["Location"] = "/docs"
        return response

    @bp.get("/docs")
    async def docs_page() -> Response:
        response = page.response()
        response.headers["Content-Security-Policy"] = DOCS_CSP
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @bp.get("/docs/apidocs.js")
    async def docs_script() -> Response:
        return init.response()

    @bp.get("/docs/vendor/<name>")
    async def docs_vendor(name: str) -> Response:
        found = vendored.get(name)
        if found is None:
            raise NotFound("no such file", code="route_not_found")
        return found.response()

    app.register_blueprint(bp)
