"""Invitations in the browser (issue 14): a link from the "Invite people" dialog, a newcomer
signs up through its landing page and lands in the workspace, the inviter sees them appear
live; a person without a workspace is added and their empty screen becomes the workspace."""

from __future__ import annotations

import uuid

from playwright.sync_api import Browser, expect

from tests.web.conftest import Person, ServerProcess, add_by_email, shot, sign_up


def test_invite_link_signup_lands_in_the_workspace(browser: Browser, server: ServerProcess) -> None:
    workspace = f"Acme {uuid.uuid4().hex[:6]}"
    ada = sign_up(browser, server, "Ada Lovelace", workspace=workspace)
    ada.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    ada.page.click("#workspace-menu")
    ada.page.click("dialog >> text=Invite people")
    ada.page.select_option("dialog select[name=max_uses]", "10")
    ada.page.click("dialog button[type=submit]")
    link = ada.page.locator("#invite-url")
    expect(link).to_be_visible()
    url = link.input_value()
    assert url.startswith(f"{server.url}/invite/"), url
    ada.page.click("dialog >> text=Copy")
    expect(ada.page.locator("dialog [role=status]")).to_have_text("Copied.")
    assert ada.page.evaluate("navigator.clipboard.readText()") == url
    shot(ada.page, "invite-link")
    ada.page.click("dialog >> text=Done")

    # A newcomer opens the link: who invites them where, then "Create account".
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    cy = Person(page, "Cy Newcomer", f"cy.{uuid.uuid4().hex[:8]}@example.com")
    page.goto(url)
    card = page.locator("#invite-card")
    expect(card).to_contain_text(f"Ada Lovelace invited you to {workspace}")
    expect(page.locator("#signup-form")).to_be_visible()
    expect(page.locator("#signup-form input[name=workspace]")).to_be_hidden()
    shot(page, "invite-landing")
    page.fill("#signup-form input[name=fullname]", cy.name)
    page.fill("#signup-form input[name=email]", cy.email)
    page.fill("#signup-form input[name=password]", "correct horse")
    page.click("#signup-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")
    expect(page.locator("#workspace-select option:checked")).to_have_text(workspace)
    assert page.evaluate("location.pathname") == "/"  # a reload does not reuse the link

    # The inviter sees the new member without reloading: in the people picker of a new chat.
    ada.page.click("#new-chat")
    expect(ada.page.locator("dialog label", has_text=cy.name)).to_be_visible()
    ada.page.click("dialog >> text=Cancel")
    assert not ada.errors
    assert not cy.errors


def test_a_person_without_a_workspace_sees_it_arrive(
    browser: Browser, server: ServerProcess
) -> None:
    workspace = f"Babbage {uuid.uuid4().hex[:6]}"
    ada = sign_up(browser, server, "Ada Lovelace", workspace=workspace)
    dee = sign_up(browser, server, "Dee Waiting")
    expect(dee.page.locator("#conversation")).to_contain_text("You are not in a workspace yet")
    add_by_email(ada, dee)
    # No reload on Dee's side: the workspace.member_added event brings it.
    expect(dee.page.locator("#workspace-select option:checked")).to_have_text(workspace)
    expect(dee.page.locator("#conversation")).not_to_contain_text("You are not in a workspace yet")
    # Renamed by its owner: Dee's workspace list follows.
    wid = ada.page.evaluate("window.fechatter.state.wsId")
    ada.page.evaluate(
        "([id, name]) => fetch(`/api/workspaces/${id}`, {method: 'PUT', headers: {"
        "'Content-Type': 'application/json', Authorization: `Bearer ${JSON.parse("
        "localStorage.getItem('fechatter.session')).token}`}, body: JSON.stringify({name})})",
        [wid, workspace + " renamed"],
    )
    expect(dee.page.locator("#workspace-select option:checked")).to_have_text(
        workspace + " renamed"
    )
    assert not ada.errors
    assert not dee.errors
