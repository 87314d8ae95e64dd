"""The OpenAPI description (``/openapi.json``) is valid, complete, and true of the live server.

- ``test_description_is_valid_openapi_31`` / ``test_every_api_route_is_described``: the
  document validates against the OpenAPI 3.1 meta-schema (schemathesis ships it), every
  component schema is a valid JSON Schema 2020-12, and every quart rule under ``/api`` (and
  the ASGI file routes) appears with its methods, integer ids, auth and problem responses; a
  route added without ``apidoc.doc`` fails here.
- ``test_the_server_keeps_to_its_description``: schemathesis against a live server (the
  fuzzer's, ``tests/test_fuzz.py``'s portal: one in-process server in its own thread, run
  from the synchronous hypothesis thread), signed in, with a workspace, chats and a message
  whose ids are swapped into about two thirds of the generated ids so requests reach real
  objects. Checks: no 5xx, every status documented, every body matching its schema; the
  server log stays clean. Bounded: ``MAX_EXAMPLES`` per operation, derandomized.

The fuzzer's hand-made route table stays: it aims hostile JSON (odd numbers, deep nesting,
lone surrogates, non-object bodies) at fields by name, and at the WebSocket ops, which
schemathesis does not do; ``test_fuzz_table_covers_every_operation`` keeps that table
complete against this description instead.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from quart_trio import QuartTrio
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31
from werkzeug.routing import Rule

from fechatter.app import ServerInfo
from fechatter.http.common import IdConverter
from fechatter.http.drain import ReadOnUnreadBodies
from fechatter.http.files import FileRoutes
from tests.conftest import Api
from tests.serverlog import LogWatch
from tests.test_fuzz import ROUTES, Portal, World, portal, world

__all__ = ["portal", "world"]  # the fuzzer's fixtures, used here too

PROBLEM = "application/problem+json"
METHODS = ("get", "put", "post", "patch", "delete")
MAX_EXAMPLES = 10  # per operation and generation mode: ~55 operations in well under a minute
REQUEST_TIMEOUT = 10.0  # seconds, each schemathesis request (the ceiling of an example)
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# Operations that end the caller's session (logout; a password change ends the others) are
# sent as the World's bystander, replaced when its token stops working.
ENDS_SESSION = {"auth_routes_logout", "auth_routes_update_me"}
# The ASGI file routes: a multipart body and downloads, not the fuzzer's JSON.
NOT_JSON = {"files_upload", "files_download", "files_thumbnail"}


def _template(rule: Rule) -> str:
    return re.sub(r"<(?:[^:<>]*:)?([^<>]+)>", r"{\1}", rule.rule)


def _quart_app(info: ServerInfo) -> QuartTrio:
    """The quart app under the ASGI wrappers ``api_app`` puts around it (file routes, the
    read-on of unread bodies)."""
    app: object = info.api
    while isinstance(app, (FileRoutes, ReadOnUnreadBodies)):
        app = app.app
    assert isinstance(app, QuartTrio), info.api
    return app


async def _description(api: Api) -> dict[str, Any]:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    spec: dict[str, Any] = r.json()
    return spec


# --- The description itself -------------------------------------------------------------------


async def test_description_is_valid_openapi_31(api: Api) -> None:
    spec = await _description(api)
    assert spec["openapi"].startswith("3.1.")
    errors = [e.message for e in jsonschema_rs.validator_for(OPENAPI_31).iter_errors(spec)]
    assert errors == []
    for name, schema in spec["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    # Answers are the same bytes each time (built once).
    again = await api.client.get("/openapi.json")
    assert again.json() == spec


async def test_every_api_route_is_described(server: ServerInfo, api: Api) -> None:
    spec = await _description(api)
    paths = spec["paths"]
    app = _quart_app(server)
    seen = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = _template(rule)
        assert path in paths, f"{rule.rule} is not in /openapi.json (add apidoc.doc)"
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op = paths[path].get(method.lower())
            assert op is not None, f"{method} {rule.rule} is not in /openapi.json"
            seen += 1
            params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "path"}
            for name, converter in rule._converters.items():
                assert params[name]["required"] is True
                if isinstance(converter, IdConverter):
                    assert params[name]["schema"]["type"] == "integer", (rule.rule, name)
                    assert params[name]["schema"]["minimum"] == 1
            authenticated = op.get("security") != []
            codes = set(op["responses"])
            assert any(c.startswith("2") for c in codes), (method, path)
            if authenticated:
                assert "401" in codes, (method, path)
            if "requestBody" in op:
                assert op["requestBody"]["required"] is True
                assert {"400", "413", "422"} <= codes, (method, path)
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert response == {"$ref": f"#/components/responses/Problem{code}"}
    assert seen >= 45
    # The web client's pages and the docs page are not API operations.
    assert "/" not in paths
    assert "/docs" not in paths
    assert "/openapi.json" not in paths
    problems = spec["components"]["responses"]
    for code in ("400", "401", "403", "404", "409", "413", "422", "429", "503"):
        content = problems[f"Problem{code}"]["content"]
        assert content == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert "Retry-After" in problems["Problem429"]["headers"]
    assert "WWW-Authenticate" in problems["Problem401"]["headers"]


async def test_the_file_routes_are_described(api: Api) -> None:
    paths = (await _description(api))["paths"]
    upload = paths["/api/files"]["post"]
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["file"] == {"type": "string", "format": "binary"}
    assert upload["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FileOut"
    }
    for path in ("/files/{file_id}", "/files/{file_id}/thumbnail"):
        download = paths[path]["get"]
        assert download["responses"]["200"]["content"]["*/*"]["schema"]["format"] == "binary"
        assert {"206", "304", "401", "404", "416"} <= set(download["responses"])


async def test_docs_page_and_its_assets(api: Api) -> None:
    r = await api.client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "unsafe" not in csp
    for src in re.findall(r'(?:src|href)="(/[^"]+)"', r.text):
        asset = await api.client.get(src)
        assert asset.status_code == 200, src
        assert asset.headers["x-content-type-options"] == "nosniff"
    r = await api.client.get("/docs/vendor/README.md")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM


# --- The live server against its description ------------------------------------------------


def _real_id(name: str, method: str, path: str, ids: dict[str, int]) -> int | None:
    """A World id for the path or query parameter ``name``, or None. Deletions and removals
    aim at the *foreign* workspace and chat (someone else's), so the World stays whole."""
    destructive = method == "DELETE" and "/reactions/" not in path
    if name == "workspace_id":
        return ids["foreign_ws" if destructive else "ws"]
    if name == "chat_id":
        if path.endswith("/join"):
            return ids["public_chat"]
        return ids["foreign_chat" if destructive else "chat"]
    if name == "message_id":
        return ids["foreign_message" if destructive else "message"]
    if name in ("user_id", "member_id", "from"):
        return ids["foreign_owner" if destructive else "other"]
    return None


def _aim(case: Any, ids: dict[str, int], pick: int) -> None:
    """Swap World ids into the generated ids of ``case`` unless ``pick`` (drawn by hypothesis)
    is 0: about two requests in three reach real objects, the rest generated ids (mostly of
    nothing). A deletion is always aimed (at the foreign objects): a generated id may be one
    of the World's own (small ids come first)."""
    method, path = case.operation.method.upper(), case.operation.path
    if pick == 0 and method != "DELETE":
        return
    for params in (case.path_parameters, case.query):
        if not params:
            continue
        for name, value in list(params.items()):
            real = _real_id(name, method, path, ids)
            if real is not None and isinstance(value, int):
                params[name] = real


def _caller(portal: Portal, world: World, operation_id: str) -> str:
    if operation_id not in ENDS_SESSION:
        return str(world.actor.auth["token"])

    async def fresh() -> None:
        r = await world.bystander.api.get("/api/users/me")
        if r.status_code == 401:  # an earlier example ended its session
            world.bystander = await Api(portal.client).signup()

    portal.run(fresh)
    return str(world.bystander.auth["token"])


def _operations(portal: Portal) -> list[Any]:
    async def fetch() -> dict[str, Any]:
        r = await portal.client.get("/openapi.json")
        assert r.status_code == 200, r.text
        spec: dict[str, Any] = r.json()
        return spec

    schema = schemathesis.openapi.from_dict(portal.run(fetch))
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the description loads whole
        operations.append(result.ok())
    return sorted(operations, key=lambda op: (op.path, op.method))


def _run_operation(
    portal: Portal, world: World, server_log: LogWatch, session: requests.Session, op: Any
) -> list[str]:
    failures: list[str] = []
    operation_id = op.definition.raw.get("operationId", op.label)
    strategies = [op.as_strategy(generation_mode=mode) for mode in GenerationMode]

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies), pick=st.integers(0, 2))
    def run(case: Any, pick: int) -> None:
        _aim(case, world.ids, pick)
        headers = {"Authorization": f"Bearer {_caller(portal, world, operation_id)}"}
        try:
            case.call_and_validate(
                base_url=portal.info.api_url,
                session=session,
                headers=headers,
                checks=CHECKS,
                timeout=REQUEST_TIMEOUT,
            )
        except (AssertionError, FailureGroup) as exc:
            failures.append(f"{op.label}: {exc}\n{case.as_curl_command(headers)}")
        logged = server_log.take()
        if logged:
            failures.append(f"{op.label}: the server logged\n" + "\n".join(logged))

    run()
    return failures


def test_the_server_keeps_to_its_description(
    portal: Portal, world: World, server_log: LogWatch
) -> None:
    operations = _operations(portal)
    assert len(operations) >= 50
    failures: list[str] = []
    with requests.Session() as session:
        for op in operations:
            failures += _run_operation(portal, world, server_log, session, op)

    def still_serving() -> Any:
        return world.sentinel.api.get(f"/api/chats/{world.ids['chat']}/messages?limit=1")

    r = portal.run(still_serving)
    assert r.status_code == 200, r.text
    assert failures == [], "\n\n".join(failures[:10])


async def test_fuzz_table_covers_every_operation(api: Api) -> None:
    """The fuzzer's hand-made table names every JSON operation of the description."""
    paths = (await _description(api))["paths"]
    missing = []
    for path, item in paths.items():
        segments = ("[^/]+" if s.startswith("{") else re.escape(s) for s in path.split("/"))
        pattern = re.compile("/".join(segments))
        for method, op in item.items():
            if method not in METHODS or op["operationId"] in NOT_JSON:
                continue
            if not any(r.method == method.upper() and pattern.fullmatch(r.path) for r in ROUTES):
                missing.append(f"{method.upper()} {path}")
    assert missing == [], f"tests/test_fuzz.py ROUTES lacks {missing}"


async def test_docs_files_are_read_once_and_revalidated(api: Api) -> None:
    """The page's files are served from memory with a strong ETag: a 304 for a client that
    has them, a day of caching for the vendored bundle; ``/docs/`` redirects to ``/docs``."""
    r = await api.client.get("/docs/")
    assert (r.status_code, r.headers["location"]) == (308, "/docs")
    for path, cache in (
        ("/docs", "no-cache"),
        ("/docs/apidocs.js", "no-cache"),
        ("/docs/vendor/swagger-ui-bundle.js", "public, max-age=86400"),
        ("/docs/vendor/swagger-ui.css", "public, max-age=86400"),
    ):
        r = await api.client.get(path)
        assert r.status_code == 200, path
        assert r.headers["cache-control"] == cache
        etag = r.headers["etag"]
        assert etag.startswith('"')
        again = await api.client.get(path, headers={"If-None-Match": etag})
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
        other = await api.client.get(path, headers={"If-None-Match": '"stale"'})
        assert (other.status_code, other.content) == (200, r.content)
