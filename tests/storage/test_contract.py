"""The behaviour every ``Storage`` backend must show (run once per backend by the fixture).

Users, refresh tokens and workspaces here; chats and messages in ``test_contract_chats.py``.
"""

from __future__ import annotations

import pytest

from fechatter.errors import Conflict, NotFound
from fechatter.models import ChatType, Role, SecurityState, UserStatus
from fechatter.storage import Storage

from .factories import EARLIER, LATER, NOW, make_group, make_user, make_workspace, send


# -- lifecycle -----------------------------------------------------------------------------
async def test_ping_answers(storage: Storage) -> None:
    await storage.ping()


async def test_statistics_start_at_zero(storage: Storage) -> None:
    stats = storage.statistics()
    assert (stats.transactions, stats.message_batches, stats.messages_inserted) == (0, 0, 0)


# -- users ---------------------------------------------------------------------------------
async def test_create_user_with_workspace(storage: Storage) -> None:
    user, workspace = await storage.create_user("Alice", "Alice@Example.COM", "h1", "Acme")
    assert user.id > 0
    assert user.email == "alice@example.com"
    assert (user.fullname, user.avatar, user.status) == ("Alice", None, UserStatus.ACTIVE)
    assert user.created_at.endswith("Z")
    assert workspace is not None
    assert (workspace.name, workspace.owner_id, workspace.description) == ("Acme", user.id, None)
    assert await storage.get_user(user.id) == user
    assert await storage.get_workspace(workspace.id) == workspace
    assert await storage.workspace_role(workspace.id, user.id) is Role.OWNER
    assert await storage.list_workspaces(user.id) == [workspace]


async def test_create_user_without_workspace(storage: Storage) -> None:
    user, workspace = await storage.create_user("Bob", "bob@example.com", "h", None)
    assert workspace is None
    assert await storage.list_workspaces(user.id) == []


async def test_email_is_unique_case_insensitively(storage: Storage) -> None:
    await storage.create_user("A", "same@example.com", "h", None)
    with pytest.raises(Conflict) as caught:
        await storage.create_user("B", "SAME@example.com", "h", None)
    assert caught.value.code == "email_taken"


async def test_signup_with_taken_workspace_name_writes_nothing(storage: Storage) -> None:
    await storage.create_user("A", "a@example.com", "h", "Acme")
    before = storage.statistics().transactions
    with pytest.raises(Conflict) as caught:
        await storage.create_user("B", "b@example.com", "h", "ACME")
    assert caught.value.code == "workspace_name_taken"
    assert await storage.get_user_by_email("b@example.com") is None
    assert storage.statistics().transactions == before
    # The email is still free: the failed signup left nothing behind.
    user, _ = await storage.create_user("B", "b@example.com", "h", None)
    assert user.email == "b@example.com"


async def test_get_users_returns_only_existing(storage: Storage) -> None:
    a = await make_user(storage, "a")
    b = await make_user(storage, "b")
    assert await storage.get_users([a.id, b.id, 999_999]) == {a.id: a, b.id: b}
    assert await storage.get_users([]) == {}
    assert await storage.get_user(999_999) is None


async def test_credentials_and_lookup_by_email(storage: Storage) -> None:
    user, _ = await storage.create_user("Carol", "carol@example.com", "argon-hash", None)
    creds = await storage.get_credentials("CAROL@example.com")
    assert creds is not None
    assert (creds.user, creds.password_hash) == (user, "argon-hash")
    assert await storage.get_credentials("nobody@example.com") is None
    assert await storage.get_user_by_email("Carol@Example.com") == user
    assert await storage.get_user_by_email("nobody@example.com") is None


async def test_update_user(storage: Storage) -> None:
    user = await make_user(storage, "dave")
    updated = await storage.update_user(user.id, fullname="David", avatar="/a.png")
    assert (updated.fullname, updated.avatar, updated.email) == ("David", "/a.png", user.email)
    updated = await storage.update_user(user.id, password_hash="new-hash")
    assert (updated.fullname, updated.avatar) == ("David", "/a.png")
    creds = await storage.get_credentials(user.email)
    assert creds is not None
    assert creds.password_hash == "new-hash"
    cleared = await storage.update_user(user.id, clear_avatar=True)
    assert cleared.avatar is None
    assert await storage.update_user(user.id) == cleared
    with pytest.raises(NotFound):
        await storage.update_user(999_999, fullname="Ghost")


# -- refresh tokens ------------------------------------------------------------------------
async def test_refresh_rotation(storage: Storage) -> None:
    user = await make_user(storage, "erin")
    await storage.add_refresh_token(user.id, "t1", "fam", LATER)
    grant = await storage.rotate_refresh_token("t1", "t2", LATER, NOW)
    assert grant is not None
    assert (grant.user_id, grant.family_id) == (user.id, "fam")
    grant = await storage.rotate_refresh_token("t2", "t3", LATER, NOW)
    assert grant is not None
    assert grant.family_id == "fam"


async def test_refresh_reuse_revokes_the_family(storage: Storage) -> None:
    user = await make_user(storage, "frank")
    await storage.add_refresh_token(user.id, "t1", "fam", LATER)
    await storage.add_refresh_token(user.id, "other", "fam2", LATER)
    assert await storage.rotate_refresh_token("t1", "t2", LATER, NOW) is not None
    # t1 again: a reuse. The live successor t2 dies with it; other families do not.
    assert await storage.rotate_refresh_token("t1", "t2b", LATER, NOW) is None
    assert await storage.rotate_refresh_token("t2", "t3", LATER, NOW) is None
    assert await storage.rotate_refresh_token("t2b", "t4", LATER, NOW) is None
    assert await storage.rotate_refresh_token("other", "other2", LATER, NOW) is not None


async def test_refresh_unknown_and_expired(storage: Storage) -> None:
    user = await make_user(storage, "gina")
    assert await storage.rotate_refresh_token("nope", "x", LATER, NOW) is None
    await storage.add_refresh_token(user.id, "old", "fam", EARLIER)
    assert await storage.rotate_refresh_token("old", "new", LATER, NOW) is None
    # Nothing was written: the would-be successor does not exist.
    assert await storage.rotate_refresh_token("new", "newer", LATER, NOW) is None


async def test_revoke_refresh_token_checks_the_owner(storage: Storage) -> None:
    user = await make_user(storage, "hank")
    other = await make_user(storage, "ivan")
    await storage.add_refresh_token(user.id, "t1", "fam", LATER)
    await storage.revoke_refresh_token("t1", other.id)
    assert await storage.rotate_refresh_token("t1", "t2", LATER, NOW) is not None
    await storage.revoke_refresh_token("t1", user.id)
    assert await storage.rotate_refresh_token("t2", "t3", LATER, NOW) is None
    await storage.revoke_refresh_token("unknown", user.id)


async def test_revoke_user_refresh_tokens(storage: Storage) -> None:
    user = await make_user(storage, "jane")
    other = await make_user(storage, "kyle")
    await storage.add_refresh_token(user.id, "a", "f1", LATER)
    await storage.add_refresh_token(user.id, "b", "f2", LATER)
    await storage.add_refresh_token(other.id, "c", "f3", LATER)
    await storage.revoke_user_refresh_tokens(user.id)
    assert await storage.rotate_refresh_token("a", "a2", LATER, NOW) is None
    assert await storage.rotate_refresh_token("b", "b2", LATER, NOW) is None
    assert await storage.rotate_refresh_token("c", "c2", LATER, NOW) is not None


async def test_security_version_raise_revokes_sessions_and_is_logged(storage: Storage) -> None:
    user = await make_user(storage, "sven")
    other = await make_user(storage, "tara")
    assert await storage.security_state(user.id) == SecurityState(user.id, 0, True)
    assert await storage.security_state(999_999) is None
    start = await storage.last_security_change()
    await storage.add_refresh_token(user.id, "keep", "kept-family", LATER)
    await storage.add_refresh_token(user.id, "drop", "other-family", LATER)
    await storage.add_refresh_token(other.id, "theirs", "their-family", LATER)
    state = await storage.raise_security_version(user.id, "kept-family")
    assert state == SecurityState(user.id, 1, True)
    assert await storage.rotate_refresh_token("keep", "keep2", LATER, NOW) is not None
    assert await storage.rotate_refresh_token("drop", "drop2", LATER, NOW) is None
    assert await storage.rotate_refresh_token("theirs", "theirs2", LATER, NOW) is not None
    # Without a family to keep, every session goes.
    assert (await storage.raise_security_version(user.id)).version == 2
    assert await storage.rotate_refresh_token("keep2", "keep3", LATER, NOW) is None
    with pytest.raises(NotFound):
        await storage.raise_security_version(999_999)
    # The log: both raises, after the starting point, each with the user's state now.
    changes = await storage.security_changes(start, "9999-01-01T00:00:00Z")
    assert [c.state for c in changes] == [SecurityState(user.id, 2, True)] * 2
    assert changes[0].id < changes[1].id == await storage.last_security_change()
    assert await storage.security_changes(changes[1].id, "9999-01-01T00:00:00Z") == []
    # Rows older than a day are pruned by the next raise (the followers look back 30 s).
    assert await storage.security_changes(0, EARLIER)  # still there: recent
    # The look-back window re-reads recent changes whatever the cursor says.
    recent = await storage.security_changes(changes[1].id, EARLIER)
    assert [c.id for c in recent][-2:] == [c.id for c in changes]


async def test_sessions_start_only_under_the_current_version(storage: Storage) -> None:
    """A sign-in that read the version before a revocation committed gets no session; the
    rotation reports the version, status and user of its own transaction."""
    user = await make_user(storage, "vera")
    creds = await storage.get_credentials(user.email)
    assert creds is not None
    assert creds.security_version == 0
    await storage.raise_security_version(user.id)
    assert not await storage.add_refresh_token(user.id, "late", "fam-late", LATER, 0)
    assert await storage.rotate_refresh_token("late", "late2", LATER, NOW) is None
    assert await storage.add_refresh_token(user.id, "now", "fam-now", LATER, 1)
    grant = await storage.rotate_refresh_token("now", "now2", LATER, NOW)
    assert grant is not None
    assert (grant.security_version, grant.active, grant.user) == (1, True, user)


async def test_a_new_password_raises_the_version_in_the_same_write(storage: Storage) -> None:
    user = await make_user(storage, "wade")
    await storage.add_refresh_token(user.id, "mine", "my-family", LATER)
    await storage.add_refresh_token(user.id, "other", "other-family", LATER)
    start = await storage.last_security_change()
    await storage.update_user(user.id, password_hash="new", keep_family="my-family")
    assert await storage.security_state(user.id) == SecurityState(user.id, 1, True)
    assert await storage.last_security_change() > start
    assert await storage.rotate_refresh_token("other", "other2", LATER, NOW) is None
    assert await storage.rotate_refresh_token("mine", "mine2", LATER, NOW) is not None
    # Other fields alone change no version.
    await storage.update_user(user.id, fullname="Wade W")
    assert await storage.security_state(user.id) == SecurityState(user.id, 1, True)


async def test_suspension_raises_the_version(storage: Storage) -> None:
    user = await make_user(storage, "ulla")
    state = await storage.set_user_status(user.id, UserStatus.SUSPENDED)
    assert state == SecurityState(user.id, 1, False)
    assert (await storage.get_user(user.id)).status is UserStatus.SUSPENDED  # type: ignore[union-attr]
    assert await storage.set_user_status(user.id, UserStatus.ACTIVE) == SecurityState(
        user.id, 2, True
    )


async def test_emails_are_one_identity_in_every_unicode_form(storage: Storage) -> None:
    user, _ = await storage.create_user("Jos\u00e9", "JOS\u00c9@example.com", "h", None)
    assert user.email == "jos\u00e9@example.com"
    for form in ("jose\u0301@example.com", "\uff2aos\u00e9@EXAMPLE.com"):
        creds = await storage.get_credentials(form)
        assert creds is not None
        assert creds.user.id == user.id
        with pytest.raises(Conflict):
            await storage.create_user("Again", form, "h", None)


# -- workspaces ----------------------------------------------------------------------------
async def test_create_workspace_and_name_conflict(storage: Storage) -> None:
    user = await make_user(storage, "lena")
    first = await storage.create_workspace("Zeta", "the z team", user.id)
    second = await storage.create_workspace("Alpha", None, user.id)
    assert (first.name, first.description, first.owner_id) == ("Zeta", "the z team", user.id)
    assert await storage.workspace_role(second.id, user.id) is Role.OWNER
    assert await storage.list_workspaces(user.id) == [first, second]
    with pytest.raises(Conflict) as caught:
        await storage.create_workspace("zeta", None, user.id)
    assert caught.value.code == "workspace_name_taken"
    assert await storage.get_workspace(999_999) is None


async def test_update_workspace(storage: Storage) -> None:
    owner, workspace = await make_workspace(storage, "acme")
    await storage.create_workspace("Taken", None, owner.id)
    updated = await storage.update_workspace(workspace.id, name="Acme Corp", description="d")
    assert (updated.name, updated.description) == ("Acme Corp", "d")
    assert updated.updated_at >= workspace.updated_at
    assert updated.created_at == workspace.created_at
    assert await storage.get_workspace(workspace.id) == updated
    renamed = await storage.update_workspace(workspace.id, description="only d")
    assert renamed.name == "Acme Corp"
    # Changing only the case of its own name is not a conflict.
    assert (await storage.update_workspace(workspace.id, name="ACME CORP")).name == "ACME CORP"
    with pytest.raises(Conflict) as caught:
        await storage.update_workspace(workspace.id, name="taken")
    assert caught.value.code == "workspace_name_taken"
    with pytest.raises(NotFound):
        await storage.update_workspace(999_999, name="x")


async def test_workspace_members(storage: Storage) -> None:
    owner, workspace = await make_workspace(storage)
    bob = await make_user(storage, "bob")
    cat = await make_user(storage, "cat")
    added = await storage.add_workspace_member(workspace.id, bob.id, Role.ADMIN)
    assert (added.user, added.role) == (bob, Role.ADMIN)
    await storage.add_workspace_member(workspace.id, cat.id, Role.MEMBER)
    members = await storage.list_workspace_members(workspace.id)
    assert [(m.user.id, m.role) for m in members] == [
        (owner.id, Role.OWNER),
        (bob.id, Role.ADMIN),
        (cat.id, Role.MEMBER),
    ]
    with pytest.raises(Conflict) as caught:
        await storage.add_workspace_member(workspace.id, bob.id, Role.MEMBER)
    assert caught.value.code == "already_member"
    with pytest.raises(NotFound):
        await storage.add_workspace_member(workspace.id, 999_999, Role.MEMBER)
    with pytest.raises(NotFound):
        await storage.add_workspace_member(999_999, bob.id, Role.MEMBER)
    assert await storage.workspace_role(workspace.id, bob.id) is Role.ADMIN
    assert await storage.remove_workspace_member(workspace.id, bob.id) is True
    assert await storage.remove_workspace_member(workspace.id, bob.id) is False
    assert await storage.workspace_role(workspace.id, bob.id) is None
    assert await storage.list_workspaces(bob.id) == []


async def test_only_an_active_user_joins_a_workspace(storage: Storage) -> None:
    """A pending user's memberships come only from the import (storage.activation's
    vouch): the write refuses a Suspended user, so a later Pending one too."""
    _, workspace = await make_workspace(storage)
    dee = await make_user(storage, "dee")
    await storage.set_user_status(dee.id, UserStatus.SUSPENDED)
    with pytest.raises(Conflict) as caught:
        await storage.add_workspace_member(workspace.id, dee.id, Role.MEMBER)
    assert caught.value.code == "user_not_active"
    assert await storage.workspace_role(workspace.id, dee.id) is None
    await storage.set_user_status(dee.id, UserStatus.ACTIVE)
    await storage.add_workspace_member(workspace.id, dee.id, Role.MEMBER)
    assert await storage.workspace_role(workspace.id, dee.id) is Role.MEMBER


async def test_delete_workspace_cascades(storage: Storage) -> None:
    workspace, users, group = await make_group(storage)
    owner = users[0]
    channel = await storage.create_chat(
        workspace.id, ChatType.PUBLIC_CHANNEL, "general", None, owner.id, [owner.id]
    )
    [message] = await send(storage, group.id, owner, "bye")
    _, keep = await make_workspace(storage, "other")
    deleted = await storage.delete_workspace(workspace.id)
    assert sorted(deleted) == sorted([group.id, channel.id])
    assert await storage.get_workspace(workspace.id) is None
    assert await storage.get_chat(group.id) is None
    assert await storage.get_message(message.id) is None
    assert await storage.list_chat_members(group.id) == []
    assert await storage.list_workspace_members(workspace.id) == []
    assert await storage.list_chats(owner.id, None) == []
    assert await storage.get_workspace(keep.id) == keep
    assert await storage.delete_workspace(workspace.id) == []


async def test_list_user_chat_ids(storage: Storage) -> None:
    workspace, users, group = await make_group(storage)
    owner = users[0]
    channel = await storage.create_chat(
        workspace.id, ChatType.PRIVATE_CHANNEL, "ops", None, owner.id, [owner.id]
    )
    _, other_ws = await make_workspace(storage, "elsewhere")
    assert await storage.list_user_chat_ids(owner.id, workspace.id) == [group.id, channel.id]
    assert await storage.list_user_chat_ids(users[1].id, workspace.id) == [group.id]
    assert await storage.list_user_chat_ids(owner.id, other_ws.id) == []
