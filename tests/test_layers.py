"""The folder tree is the architecture: imports point down the layers, never up or across.

Layers, lowest first (STYLE.md "Layers"; issue 10): plain data and edge rules → storage →
domain modules and actors → transports (HTTP, realtime; neither imports the other) → the
process (app, cli, demo). A module may import its own layer and any lower one. A lower layer
that needs something from above takes a Protocol (``actors/ports.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fechatter

PACKAGE = Path(fechatter.__file__).parent

# Prefix → layer; the longest matching prefix wins.
LAYERS: dict[str, int] = {
    "fechatter": 0,  # models, errors, events, config, schemas, auth, text, wire, metrics, ...
    "fechatter.reaction_emoji": 0,  # pure reaction-name rules (SPEC §6), emoji data only
    "fechatter.storage": 1,
    "fechatter.bus": 1,  # the message bus between nodes: infrastructure under the actors
    "fechatter.access": 2,
    "fechatter.security": 2,
    "fechatter.domain": 2,
    "fechatter.actors": 2,
    "fechatter.cluster": 2,  # ownership and forwarding beside the actors (docs/cluster.md)
    "fechatter.http": 3,
    "fechatter.realtime": 3,
    "fechatter.app": 4,
    "fechatter.cli": 4,
    "fechatter.cli_admin": 4,  # admin commands (issue 17)
    "fechatter.cli_archive": 4,  # export / import commands (issue 17)
    "fechatter.cli_backup": 4,  # backup / restore commands (issue 17)
    "fechatter.cli_errors": 4,  # one-line command-line errors
    "fechatter.demo": 4,
    "fechatter.workers": 4,  # the --workers parent: starts and supervises processes
    "fechatter.__main__": 4,
}
TRANSPORTS = ("fechatter.http", "fechatter.realtime")


def _layer(module: str) -> tuple[int, str]:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best], best


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def _imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in out if m == "fechatter" or m.startswith("fechatter.")}


_MODULES = _modules()
_NAMES = frozenset(n for n, _ in _MODULES)


def _known(module: str) -> bool:
    return module in _NAMES


@pytest.mark.parametrize(("name", "path"), _MODULES, ids=[n for n, _ in _MODULES])
def test_imports_point_down(name: str, path: Path) -> None:
    layer, home = _layer(name)
    bad = []
    for target in sorted(_imports(name, path)):
        if not _known(target):
            continue  # ``from pkg import name`` also yields pkg.name for plain names
        their_layer, their_home = _layer(target)
        if their_layer > layer:
            bad.append(f"{target} (layer {their_layer} > {layer})")
        elif their_layer == 3 and layer == 3 and their_home != home:
            bad.append(f"{target} (one transport importing another)")
    assert not bad, f"{name} imports upward: {bad}"


def test_the_layer_test_can_fail() -> None:
    """The checker itself: an upward import is seen (relative ones too)."""
    assert _layer("fechatter.actors.user") == (2, "fechatter.actors")
    assert _layer("fechatter.realtime.stream")[0] == 3
    assert _layer("fechatter.models")[0] == 0
    assert _layer("fechatter.reaction_emoji") == (0, "fechatter.reaction_emoji")
    probe = PACKAGE / "actors" / "user.py"
    assert "fechatter.actors.ports" in _imports("fechatter.actors.user", probe)
