"""The API docs page (/docs) in headless Chromium: Swagger UI renders the server's own
/openapi.json from vendored files only, under the page's CSP, with no violation."""

from __future__ import annotations

from playwright.sync_api import Browser, Request, Route, expect

from tests.web.conftest import ServerProcess, shot

# Records CSP violations in the page (an init script runs before the page's own scripts and
# is not subject to its CSP).
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def test_docs_page_renders_offline_under_its_csp(browser: Browser, server: ServerProcess) -> None:
    context = browser.new_context()
    elsewhere: list[str] = []

    def only_the_server(route: Route, request: Request) -> None:
        if request.url.startswith(server.url + "/"):
            route.continue_()
        else:  # the page must work offline: nothing may leave for another origin
            elsewhere.append(request.url)
            route.abort()

    context.route("**/*", only_the_server)
    page = context.new_page()
    errors: list[str] = []
    console: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.add_init_script(WATCH_CSP)
    page.goto(server.url + "/docs")

    # Operations from every part of the API, rendered from /openapi.json.
    expect(page.locator(".opblock").first).to_be_visible()
    for path in ("/api/auth/signup", "/api/chats/{chat_id}/messages", "/api/files"):
        expect(page.locator(".opblock-summary-path", has_text=path).first).to_be_visible()
    assert page.locator(".opblock").count() >= 50
    expect(page.locator(".info .title")).to_contain_text("Fechatter")
    members = "/api/workspaces/{workspace_id}/members"
    page.locator(".opblock-summary", has_text=members).first.click()
    expect(page.locator(".opblock-body .parameters").first).to_contain_text("integer")
    shot(page, "apidocs")

    assert page.evaluate("window.__csp") == []
    assert [c for c in console if "Content Security Policy" in c] == []
    assert errors == []
    assert elsewhere == []
    context.close()
