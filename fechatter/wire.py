"""Decoding JSON from clients with bounds, for every transport (HTTP bodies, WebSocket frames).

The standard library's ``json.loads`` has no limits: 100,000 ``[`` raise ``RecursionError``
and a 5,000-digit integer ``ValueError`` (Python's int-conversion limit), both escaping as
500s. orjson (a maintained Rust parser, pinned in pyproject.toml) bounds nesting at 1,024
levels, and refuses numbers that overflow a double and lone surrogates in ``\\u`` escapes.
What this module adds: the translation of its failures into problem documents,
and, for the one failure a client can fix field by field (a lone surrogate), the name of the
field.

This module must never import from a transport; both of them import it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from fechatter.errors import BadRequest, FieldError, Invalid
from fechatter.text import TextError, check_well_formed

MAX_DEPTH = 1024  # orjson's fixed recursion limit (documented under "Deserialize")


def loads(raw: bytes | str, what: str = "request body") -> Any:
    """Decode one JSON document; ``what`` names it in a ``malformed_json`` detail (an HTTP
    body, a WebSocket frame).

    Raises ``BadRequest`` (400): ``malformed_json``, ``json_too_deep`` (nesting past
    ``MAX_DEPTH``), ``number_out_of_range`` (a number that does not fit a 64-bit float);
    ``Invalid`` (422, ``invalid_text``) naming the field whose string holds a lone surrogate.
    Integers past 64 bits decode as floats, which strict integer fields then refuse (422).
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
    if "depth limit" in reason:
        raise BadRequest(
            f"JSON nests deeper than {MAX_DEPTH} levels", code="json_too_deep"
        ) from None
    if "number is infinity" in reason:  # orjson's overflow message (others are malformed)
        raise BadRequest("a JSON number is out of range", code="number_out_of_range") from None
    if "surrogate" in reason:
        field = _surrogate_field(raw)
        if field is not None:
            raise Invalid(
                f"{field}: must be well-formed Unicode",
                code="invalid_text",
                errors=[FieldError(field, "must be well-formed Unicode (no unpaired surrogates)")],
            )
    raise BadRequest(f"{what} is not valid JSON", code="malformed_json") from None


def _surrogate_field(raw: bytes | str) -> str | None:
    """The dotted path of the first string with a lone surrogate (the error path only).

    The standard library accepts lone surrogates, so it can find them; it may fail on the
    same document for another reason (depth), and then no field is named.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    # Depth first in document order (children pushed reversed), looking for surrogates only.
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                return path or "body"
        elif isinstance(value, dict):
            children: list[tuple[str, Any]] = []
            for key, item in value.items():
                if _has_surrogate(key):
                    return path or "body"
                children.append((f"{path}.{key}" if path else key, item))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            items = [(f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value)]
            stack.extend(reversed(items))
    return None  # pragma: no cover - orjson said there was one


def _has_surrogate(text: str) -> bool:
    try:
        check_well_formed(text.replace("\x00", ""))
    except TextError:
        return True
    return False
