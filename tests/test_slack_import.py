"""``fechatter import --slack`` (issue 17, docs/archive.md "Slack"): a Slack-format export
made here (users, a public channel over two days with a thread, reactions, an edit, a file, a
mention and a join; a private group; an mpim; a DM) imported into a live server's database;
an activated user then sees it through the HTTP API, in order."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import argon2
import pytest
import trio

from fechatter.config import Settings
from fechatter.domain.slack_import import NEUTRAL, SlackSource, reaction_emoji, slack_time
from fechatter.models import UserStatus
from fechatter.storage import open_storage
from fechatter.storage.archive import ArchiveInvalid
from tests.conftest import Api
from tests.test_archive import CEILING, db_flags, run_cli

T0 = 1_700_000_000


def ts(offset: int) -> str:
    return f"{T0 + offset}.000{offset:03d}"


def user(uid: str, name: str, email: str | None, **extra: Any) -> dict[str, Any]:
    profile = {"real_name": name, "display_name": name.lower()}
    if email:
        profile["email"] = email
    return {"id": uid, "name": name.lower(), "real_name": name, "profile": profile, **extra}


def slack_export(path: Path) -> None:
    users = [
        user("U1", "Ada", "Ada@Example.com", is_primary_owner=True, is_owner=True),
        user("U2", "Bob", "bob@example.com"),
        user("U3", "Cy", "cy@example.com"),
        user("B1", "Deploybot", None, is_bot=True),
    ]
    general = {
        "id": "C1",
        "name": "general",
        "created": T0,
        "creator": "U1",
        "members": ["U1", "U2", "U3"],
        "purpose": {"value": "company-wide"},
    }
    day1 = [
        {"type": "message", "subtype": "channel_join", "user": "U3", "ts": ts(1), "text": "joined"},
        # Out of order in the file: seq follows ts.
        {
            "type": "message",
            "user": "U2",
            "ts": ts(3),
            "text": "reply in thread",
            "thread_ts": ts(2),
            "parent_user_id": "U1",
        },
        {
            "type": "message",
            "user": "U1",
            "ts": ts(2),
            "text": "hello <@U2|bob> &amp; all, kiwiword",
            "thread_ts": ts(2),
            "reply_count": 1,
            "reactions": [
                {"name": "+1", "users": ["U2", "U3"], "count": 2},
                {"name": "partyparrot", "users": ["U1"], "count": 1},
                {"name": "thumbsup::skin-tone-2", "users": ["U3"], "count": 1},
            ],
        },
    ]
    day2 = [
        {
            "type": "message",
            "user": "U3",
            "ts": ts(10),
            "text": "edited text <!here>",
            "edited": {"user": "U3", "ts": ts(11)},
        },
        {
            "type": "message",
            "subtype": "file_share",
            "user": "U2",
            "ts": ts(12),
            "text": "",
            "files": [
                {
                    "id": "F1",
                    "name": "plan.pdf",
                    "title": "Plan",
                    "mimetype": "application/pdf",
                    "size": 1234,
                    "url_private": "https://files.slack.com/F1",
                }
            ],
        },
        {
            "type": "message",
            "subtype": "bot_message",
            "bot_id": "BX",
            "ts": ts(13),
            "text": "deployed",
        },
    ]
    files: dict[str, Any] = {
        "users.json": users,
        "channels.json": [general],
        "groups.json": [
            {"id": "G1", "name": "secret", "created": T0, "creator": "U1", "members": ["U1", "U2"]}
        ],
        "mpims.json": [
            {
                "id": "G2",
                "name": "mpdm-ada--bob--cy-1",
                "created": T0,
                "creator": "U1",
                "members": ["U1", "U2", "U3"],
            }
        ],
        "dms.json": [{"id": "D1", "created": T0, "members": ["U1", "U2"]}],
        "general/2023-11-14.json": day1,
        "general/2023-11-15.json": day2,
        "secret/2023-11-14.json": [{"type": "message", "user": "U2", "ts": ts(5), "text": "psst"}],
        "mpdm-ada--bob--cy-1/2023-11-14.json": [
            {"type": "message", "user": "U3", "ts": ts(6), "text": "three of us"}
        ],
        "D1/2023-11-14.json": [{"type": "message", "user": "U1", "ts": ts(7), "text": "just us"}],
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in files.items():
            zf.writestr(name, json.dumps(value))


def test_reaction_names() -> None:
    assert reaction_emoji("+1") == "\N{THUMBS UP SIGN}"
    assert reaction_emoji("thumbsup::skin-tone-2") == "\N{THUMBS UP SIGN}"
    assert reaction_emoji("partyparrot") == ":partyparrot:"
    assert reaction_emoji("x" * 40) is None
    assert slack_time("1700000000.000100") == "2023-11-14T22:13:20.000100Z"


async def test_slack_export_imported_and_seen_through_the_api(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with trio.fail_after(CEILING):
        export = tmp_path / "Acme Slack export.zip"
        slack_export(export)
        live = settings_factory()
        assert await run_cli("import", "--slack", str(export), *db_flags(live)) == 0
        async with open_storage(live.database_url) as storage:
            ada = await storage.get_user_by_email("ada@example.com")
            bob = await storage.get_user_by_email("bob@example.com")
            assert ada is not None
            assert bob is not None
            assert ada.status is UserStatus.PENDING
            # What a reset link does (docs/archive.md; tests/admin/test_activation.py).
            hashed = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(
                "correct horse"
            )
            await storage.update_user(ada.id, password_hash=hashed)
            await storage.set_user_status(ada.id, UserStatus.ACTIVE)
        # The summary counts what is stored: U3's "+1" and "thumbsup::skin-tone-2" are one 👍.
        summary = capsys.readouterr().out
        assert "5 users created (pending" in summary, summary
        assert " 3 reactions," in summary, summary
        r = await api.post(
            "/api/auth/signin", json={"email": "ada@example.com", "password": "correct horse"}
        )
        assert r.status_code == 200, r.text
        me = Api(api.client, r.json()["token"])
        (ws,) = (await me.get("/api/workspaces")).json()
        assert ws["name"] == "Acme Slack export"
        assert ws["owner_id"] == ada.id
        chats = {
            (c["type"], c["name"]): c
            for c in (await me.get("/api/chats", params={"workspace_id": ws["id"]})).json()
        }
        assert set(chats) == {
            ("PublicChannel", "general"),
            ("PrivateChannel", "secret"),
            ("Group", None),
            ("Single", None),
        }
        assert chats[("PublicChannel", "general")]["description"] == "company-wide"
        assert chats[("PublicChannel", "general")]["unread_count"] == 0
        general = chats[("PublicChannel", "general")]["id"]
        r = await me.get(f"/api/chats/{general}/messages")
        items = r.json()["items"][::-1]
        assert [m["seq"] for m in items] == [1, 2, 3, 4, 5]
        root, reply, edited, shared, bot = items
        assert root["content"] == f"hello <@{bob.id}> & all, kiwiword"
        assert root["mentions"] == [bob.id]
        assert root["created_at"] == slack_time(ts(2))
        assert root["reply_count"] == 1
        assert root["last_reply_at"] == slack_time(ts(3))
        assert [(x["emoji"], x["count"]) for x in root["reactions"]] == [
            ("\N{THUMBS UP SIGN}", 2),
            (":partyparrot:", 1),
        ]
        assert reply["thread_id"] == root["id"]
        assert reply["sender_id"] == bob.id
        assert edited["content"] == "edited text <!channel>"
        assert edited["mentions_channel"] is True
        assert edited["edited_at"] == slack_time(ts(11))
        assert shared["content"] == "[file: plan.pdf (application/pdf, 1234 bytes)]"
        assert shared["files"] == []
        assert bot["content"] == "deployed"
        r = await me.get(f"/api/users/{bot['sender_id']}")
        assert r.json()["fullname"] == "Slack bot"
        r = await me.get("/api/search/messages", params={"q": "kiwiword", "workspace_id": ws["id"]})
        assert [i["message"]["id"] for i in r.json()["items"]] == [root["id"]]
        single = chats[("Single", None)]["id"]
        r = await me.get(f"/api/chats/{single}/messages")
        assert [m["content"] for m in r.json()["items"]] == ["just us"]
        # A send continues the imported seq.
        r = await me.post(f"/api/chats/{general}/messages", json={"content": "hi again"})
        assert r.status_code == 201, r.text
        assert r.json()["seq"] == 6


def write_zip(path: Path, files: dict[str, Any]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in files.items():
            zf.writestr(name, json.dumps(value))


def small_export(day: list[dict[str, Any]], **channel: Any) -> dict[str, Any]:
    """Two users and one channel ``general`` whose one day file is ``day``."""
    general = {"id": "C1", "name": "general", "created": T0, "creator": "U1"}
    return {
        "users.json": [
            user("U1", "Ada", "ada@example.com", is_primary_owner=True),
            user("U2", "Bob", "bob@example.com"),
        ],
        "channels.json": [{**general, "members": ["U1", "U2"], **channel}],
        "general/2023-11-14.json": day,
    }


async def test_bad_slack_exports_are_one_line_and_write_nothing(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hello = {"type": "message", "user": "U1", "ts": ts(1), "text": "hello"}
    cases = {
        "created": (small_export([hello], created="yesterday"), "general: created: not a Slack"),
        "edited": (
            small_export([{**hello, "edited": {"user": "U1", "ts": "x"}}]),
            "general message 1700000001.000001 edited.ts: not a Slack timestamp: 'x'",
        ),
        "ts": (small_export([{**hello, "ts": "soon"}]), "general/2023-11-14.json: a message"),
    }
    with trio.fail_after(CEILING):
        live = settings_factory()
        capsys.readouterr()
        for name, (files, expected) in cases.items():
            export = tmp_path / f"{name}.zip"
            write_zip(export, files)
            assert await run_cli("import", "--slack", str(export), *db_flags(live)) == 1, name
            err = capsys.readouterr().err
            assert err.count("\n") == 1, (name, err)
            assert expected in err, (name, err)
        async with open_storage(live.database_url) as storage:
            assert await storage.get_user_by_email("ada@example.com") is None
        # A member that is not a Slack id (an object) is left out, not a crash.
        export = tmp_path / "members.zip"
        write_zip(export, small_export([hello], members=["U1", {"id": "U2"}, "U2"]))
        assert await run_cli("import", "--slack", str(export), *db_flags(live)) == 0


def test_a_json_member_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    export = tmp_path / "bomb.zip"
    files = small_export([{"type": "message", "user": "U1", "ts": ts(1), "text": "x" * 5000}])
    write_zip(export, files)
    with zipfile.ZipFile(export) as zf:
        # The day files are read when the source is made (is a bot user needed?).
        with pytest.raises(ArchiveInvalid, match=r"general/2023-11-14.json: 50\d\d bytes, over"):
            SlackSource(zf, "bomb", max_json_bytes=4000)  # users.json is far smaller
        with pytest.raises(ArchiveInvalid, match=r"users.json: \d+ bytes, over the 10 allowed"):
            SlackSource(zf, "bomb", max_json_bytes=10)


async def test_escaped_text_stays_text_and_long_messages_are_split(
    api: Api, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """A typed ``<@1>`` or ``<!channel>`` (Slack writes it ``&lt;@1&gt;``) names no one; a
    message over max_content_chars becomes continuation messages; no bot user unless a
    message needs one."""
    long_text = ("word " * 1900).strip() + " <@U2> end"  # 9506 characters
    day: list[dict[str, Any]] = [
        {"type": "message", "user": "U2", "ts": ts(1), "text": "&lt;@1&gt; &lt;!channel&gt; <@U1>"},
        {
            "type": "message",
            "user": "U1",
            "ts": ts(2),
            "text": long_text,
            "reactions": [{"name": "+1", "users": ["U2", {"id": "U1"}]}],
        },
    ]
    with trio.fail_after(CEILING):
        export = tmp_path / "escapes.zip"
        write_zip(export, small_export(day))
        live = settings_factory()
        assert await run_cli("import", "--slack", str(export), *db_flags(live)) == 0
        async with open_storage(live.database_url) as storage:
            ada = await storage.get_user_by_email("ada@example.com")
            bob = await storage.get_user_by_email("bob@example.com")
            assert ada is not None
            assert bob is not None
            (ws,) = await storage.list_workspaces(ada.id)
            assert ws.description == "Imported from Slack"
            members = await storage.list_workspace_members(ws.id)
            assert sorted(m.user.fullname for m in members) == ["Ada", "Bob"]  # no "Slack bot"
            (chat,) = await storage.list_chats(ada.id, ws.id)
            page = await storage.list_messages(chat.id, limit=10, before=None, after=0)
        escaped, *parts = sorted(page.items, key=lambda m: m.seq)
        assert escaped.content == f"{NEUTRAL}@1> {NEUTRAL}!channel> <@{ada.id}>"
        assert escaped.mentions == (ada.id,)
        assert escaped.mentions_channel is False
        assert [len(p.content) for p in parts[:2]] == [3999, 3999]  # cut at a space
        assert len(parts) == 3
        assert all(p.sender_id == ada.id and p.created_at == slack_time(ts(2)) for p in parts)
        assert [len(p.reactions) for p in parts] == [1, 0, 0]
        assert parts[2].content.endswith("end")
        assert parts[2].content.endswith(f"<@{bob.id}> end")
        assert parts[2].mentions == (bob.id,)
        assert " ".join(p.content for p in parts) == long_text.replace("<@U2>", f"<@{bob.id}>")


class CountingZip(zipfile.ZipFile):
    """A zip that counts how often each member is opened."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.opened: dict[str, int] = {}

    def open(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        key = name.filename if isinstance(name, zipfile.ZipInfo) else str(name)
        self.opened[key] = self.opened.get(key, 0) + 1
        return super().open(name, *args, **kwargs)


def test_each_day_file_is_parsed_once_and_the_json_has_a_budget(tmp_path: Path) -> None:
    """Every JSON file is inflated once, whatever is read afterwards; a day file over its own
    cap, or a file that takes the export past the total budget, is refused before it is
    inflated (the caps are made small here: no large allocation)."""
    export = tmp_path / "full.zip"
    slack_export(export)
    with CountingZip(export) as zf:
        with SlackSource(zf, "once") as source:
            counts = [
                len(list(source.users())),
                len(list(source.workspace_members())),
                len(list(source.chats())),
                len(list(source.members())),
                len(list(source.messages())),
                len(list(source.reactions())),
            ]
        assert counts == [5, 5, 4, 10, 8, 4]  # with the bot user
        assert len(zf.opened) == 10, zf.opened  # users.json, 4 lists, 5 day files
        assert set(zf.opened.values()) == {1}, zf.opened
        sizes = {i.filename: i.file_size for i in zf.infolist()}
    day = "general/2023-11-14.json"
    with zipfile.ZipFile(export) as zf:
        with pytest.raises(ArchiveInvalid, match=rf"^{day}: {sizes[day]} bytes, over the 100 "):
            SlackSource(zf, "day", max_day_bytes=100)
        # users.json and the lists come first; the total is crossed at a day file.
        before = sum(sizes[n] for n in ("users.json", "channels.json", "groups.json"))
        budget = before + sizes["mpims.json"] + sizes["dms.json"] + sizes[day] - 1
        with pytest.raises(
            ArchiveInvalid,
            match=rf"^{day}: the export's JSON files come to over {budget} bytes.*"
            "raise --slack-json-budget",
        ):
            SlackSource(zf, "total", max_total_bytes=budget)
        with SlackSource(zf, "enough", max_total_bytes=sum(sizes.values())):
            pass


async def test_json_budget_from_the_command_line_and_a_dm_with_a_third_sender(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--slack-json-budget MIB`` bounds the JSON read (one line, exit 1, nothing written);
    a DM in which an app posted becomes a Group of the two (a Single chat has two people)."""
    hello = {"type": "message", "user": "U1", "ts": ts(1), "text": "x" * (1 << 20)}
    files = small_export([hello])
    files["dms.json"] = [{"id": "D1", "created": T0, "members": ["U1", "U2"]}]
    files["D1/2023-11-14.json"] = [
        {"type": "message", "user": "U2", "ts": ts(2), "text": "hi"},
        {"type": "message", "subtype": "bot_message", "bot_id": "B9", "ts": ts(3), "text": "ping"},
    ]
    with trio.fail_after(CEILING):
        export = tmp_path / "big.zip"
        write_zip(export, files)
        live = settings_factory()
        capsys.readouterr()
        flags = ("--slack-json-budget", "1", *db_flags(live))
        assert await run_cli("import", "--slack", str(export), *flags) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "general/2023-11-14.json: the export's JSON files come to over 1048576" in err
        async with open_storage(live.database_url) as storage:
            assert await storage.get_user_by_email("ada@example.com") is None
        assert await run_cli("import", "--slack", str(export), *db_flags(live)) == 0
        async with open_storage(live.database_url) as storage:
            ada = await storage.get_user_by_email("ada@example.com")
            assert ada is not None
            (ws,) = await storage.list_workspaces(ada.id)
            kinds = {c.record.type.value for c in await storage.list_chats(ada.id, ws.id)}
            dm = next(c for c in await storage.list_chats(ada.id, ws.id) if c.record.name is None)
            page = await storage.list_messages(dm.id, limit=10, before=None, after=0)
            members = await storage.list_chat_members(dm.id)
        assert kinds == {"PublicChannel", "Group"}
        assert sorted(m.content for m in page.items) == ["hi", "ping"]
        assert len(members) == 2
