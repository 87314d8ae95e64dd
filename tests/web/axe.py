"""axe-core in the browser tests: inject the engine into a page and fail on serious problems.

The engine is the ``axe.min.js`` bundled in the ``axe-playwright-python`` wheel (a pinned dev
dependency): only that file is used, read from the installed package and evaluated in the page
through Playwright (DevTools evaluation, so the page's Content-Security-Policy, which allows
scripts from our origin only, does not stand in the way). Nothing is fetched from a CDN.
"""

from __future__ import annotations

import importlib.resources
from functools import cache
from typing import Any

from playwright.sync_api import Page

BLOCKING = ("serious", "critical")

_RUN = """async (include) => {
  const results = await axe.run(include ? {include: [include]} : document, {
    resultTypes: ["violations"],
  });
  return results.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + " — " + n.failureSummary),
  }));
}"""


@cache
def axe_source() -> str:
    """The text of the bundled ``axe.min.js`` (raises FileNotFoundError if the wheel is
    missing: ``pip install -e '.[dev]'``)."""
    return (importlib.resources.files("axe_playwright_python") / "axe.min.js").read_text()


def violations(page: Page, include: str | None = None) -> list[dict[str, Any]]:
    """Every axe violation on ``page`` (or inside the CSS selector ``include``): dicts with
    ``id``, ``impact``, ``help`` and up to five ``nodes`` (selector — summary)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    found: list[dict[str, Any]] = page.evaluate(_RUN, include)
    return found


def assert_accessible(page: Page, screen: str, include: str | None = None) -> None:
    """Fail with a readable list if axe finds a serious or critical violation on ``page``."""
    bad = [v for v in violations(page, include) if v["impact"] in BLOCKING]
    lines = [f"{v['impact']} {v['id']}: {v['help']}\n    " + "\n    ".join(v["nodes"]) for v in bad]
    assert not bad, f"axe on {screen}:\n" + "\n".join(lines)
