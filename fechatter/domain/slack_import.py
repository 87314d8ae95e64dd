"""Slack's standard workspace export as archive rows (issue 17; mapping in docs/archive.md).

``SlackSource`` reads the export zip (``users.json``, ``channels.json``, ``groups.json``,
``mpims.json``, ``dms.json``, and one folder of ``YYYY-MM-DD.json`` arrays per conversation)
and yields the rows of ``fechatter.storage.archive`` with ids of its own (1, 2, …), so the
one importer (``import_rows``) remaps and writes them like any archive. Messages stream a day
file at a time, sorted by ``ts``: that is their ``seq``. Reactions walk the day files a second
time (the same deterministic order, so the same message ids) rather than holding them.

Pure over the zip: no database, no network (Slack's file URLs cannot be fetched, so files
become a line of metadata in the message).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fechatter.errors import Invalid
from fechatter.models import UserStatus, format_time, utc_now
from fechatter.reaction_emoji import canonical_emoji
from fechatter.storage.archive import (
    ArchiveChat,
    ArchiveFile,
    ArchiveInvalid,
    ArchiveMember,
    ArchiveMessage,
    ArchiveReaction,
    ArchiveUser,
    ArchiveWorkspace,
)

# Everything read; the importer clamps it to the chat's last seq.
ALL_READ = 1 << 62
BOT_EMAIL = "slack-bot@slack-import.invalid"
PENDING = UserStatus.PENDING.value  # the status archived (the importer creates all Pending)
MAX_FULLNAME = 64
# Message subtypes that are messages; the others (channel_join, channel_leave, channel_topic,
# channel_purpose, channel_name, pinned_item, tombstone, …) are events, not imported.
KEPT_SUBTYPES = frozenset({None, "bot_message", "thread_broadcast", "file_share", "me_message"})
# (file, our chat type) in the order conversations are numbered.
CONVERSATIONS = (
    ("channels.json", "PublicChannel"),
    ("groups.json", "PrivateChannel"),
    ("mpims.json", "Group"),
    ("dms.json", "Single"),
)
_TOKEN = re.compile(r"<([^<>\n]+)>")


def slack_time(ts: str) -> str:
    """RFC 3339 of a Slack ``ts`` (``"1700000000.000100"``: seconds.microseconds)."""
    whole, _, frac = str(ts).partition(".")
    moment = datetime.fromtimestamp(int(whole), UTC)
    return format_time(moment.replace(microsecond=int((frac + "000000")[:6])))


def _ts_key(ts: str) -> tuple[int, int]:
    whole, _, frac = str(ts).partition(".")
    return int(whole), int((frac + "000000")[:6])


@dataclass(slots=True)
class _Conversation:
    id: int
    type: str
    folder: str
    slack: dict[str, Any]
    members: list[int] = field(default_factory=list)
    owner: int = 0


class SlackSource:
    """An ``ArchiveSource`` over a Slack export zip; ``ArchiveInvalid`` for a file that is
    not Slack's format."""

    def __init__(self, zf: zipfile.ZipFile, workspace_name: str) -> None:
        self._zf = zf
        self._name = workspace_name
        self._now = utc_now()
        self._names = zf.namelist()
        slack_users = self._json("users.json", required=True)
        self._users: dict[str, int] = {}
        self._rows: list[ArchiveUser] = []
        self._roles: dict[int, str] = {}
        self._owner = 0
        for raw in slack_users:
            if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
                raise ArchiveInvalid("users.json: every user needs a string id")
            uid = len(self._rows) + 1
            self._users[raw["id"]] = uid
            profile: dict[str, Any] = raw["profile"] if isinstance(raw.get("profile"), dict) else {}
            name = next(
                (
                    str(v).strip()
                    for v in (
                        raw.get("real_name"),
                        profile.get("real_name"),
                        profile.get("display_name"),
                        raw.get("name"),
                        raw["id"],
                    )
                    if v and str(v).strip()
                ),
                raw["id"],
            )
            email = profile.get("email") or f"{raw['id'].lower()}@slack-import.invalid"
            self._rows.append(
                ArchiveUser(uid, name[:MAX_FULLNAME], str(email), None, PENDING, self._now)
            )
            if raw.get("is_primary_owner") and not self._owner:
                self._owner = uid
            if raw.get("is_owner") or raw.get("is_admin"):
                self._roles[uid] = "admin"
        if not self._rows:
            raise ArchiveInvalid("users.json: no users")
        self._bot = len(self._rows) + 1
        self._rows.append(ArchiveUser(self._bot, "Slack bot", BOT_EMAIL, None, PENDING, self._now))
        if not self._owner:
            self._owner = next(
                (
                    self._users[u["id"]]
                    for u in slack_users
                    if not u.get("is_bot") and not u.get("deleted")
                ),
                1,
            )
        self._roles[self._owner] = "owner"
        self._chats: list[_Conversation] = []
        for file, kind in CONVERSATIONS:
            for raw in self._json(file, required=file == "channels.json"):
                conv = self._conversation(raw, file, kind)
                if conv is not None:
                    self._chats.append(conv)

    def _json(self, name: str, *, required: bool) -> list[Any]:
        if name not in self._names:
            if required:
                raise ArchiveInvalid(f"not a Slack export: {name} is missing")
            return []
        try:
            value = json.loads(self._zf.read(name))
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveInvalid(f"{name}: unreadable ({exc})") from None
        except ValueError:
            raise ArchiveInvalid(f"{name}: not JSON") from None
        if not isinstance(value, list):
            raise ArchiveInvalid(f"{name}: not a JSON array")
        return value

    def _conversation(self, raw: Any, file: str, kind: str) -> _Conversation | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            raise ArchiveInvalid(f"{file}: every conversation needs a string id")
        members = list(
            dict.fromkeys(self._users[m] for m in raw.get("members") or [] if m in self._users)
        )
        creator = self._users.get(str(raw.get("creator") or raw.get("user") or ""))
        if kind == "Single" and len(members) != 2:
            return None  # a DM with oneself (or with a user not exported): nothing to map
        owner = creator if creator in members else (members[0] if members else creator)
        if owner is None:
            owner = self._owner
        if owner not in members:
            members.insert(0, owner)
        folder = raw["id"] if kind == "Single" else str(raw.get("name") or raw["id"])
        conv = _Conversation(len(self._chats) + 1, kind, folder, raw, members, owner)
        return conv

    # -- ArchiveSource -----------------------------------------------------------------
    def users(self) -> Iterator[ArchiveUser]:
        return iter(self._rows)

    def files(self) -> Iterator[ArchiveFile]:
        return iter(())

    def workspace(self) -> ArchiveWorkspace:
        return ArchiveWorkspace(
            1, self._name, "Imported from Slack", self._owner, self._now, self._now
        )

    def workspace_members(self) -> Iterator[ArchiveMember]:
        for u in self._rows:
            yield ArchiveMember(None, u.id, self._roles.get(u.id, "member"), self._now)

    def chats(self) -> Iterator[ArchiveChat]:
        for c in self._chats:
            raw = c.slack
            created = slack_time(str(raw["created"])) if raw.get("created") else self._now
            named = c.type in ("PublicChannel", "PrivateChannel")
            purpose = _value(raw.get("purpose")) or _value(raw.get("topic"))
            yield ArchiveChat(
                c.id,
                c.type,
                str(raw.get("name") or c.folder) if named else None,
                purpose if named else None,
                c.owner,
                created,
                created,
                None,
            )

    def members(self) -> Iterator[ArchiveMember]:
        for c in self._chats:
            for uid in c.members:
                role = "owner" if uid == c.owner else "member"
                yield ArchiveMember(c.id, uid, role, self._now, ALL_READ)

    def _walk(self) -> Iterator[tuple[_Conversation, int, int, dict[str, Any], int | None]]:
        """Every imported message as (chat, id, seq, Slack message, thread root id)."""
        next_id = 0
        for c in self._chats:
            prefix = c.folder + "/"
            days = sorted(n for n in self._names if n.startswith(prefix) and n.endswith(".json"))
            roots: dict[str, int] = {}
            seq = 0
            for day in days:
                items = [m for m in self._json(day, required=True) if isinstance(m, dict)]
                try:
                    items.sort(key=lambda m: _ts_key(m["ts"]))
                except (KeyError, ValueError):
                    raise ArchiveInvalid(f"{day}: a message without a valid ts") from None
                for m in items:
                    if m.get("type", "message") != "message":
                        continue
                    if m.get("subtype") not in KEPT_SUBTYPES:
                        continue
                    if not (m.get("text") or m.get("files")):
                        continue
                    thread_ts = m.get("thread_ts")
                    root = roots.get(thread_ts) if thread_ts and thread_ts != m["ts"] else None
                    next_id += 1
                    seq += 1
                    if root is None:
                        roots[m["ts"]] = next_id
                    yield c, next_id, seq, m, root

    def messages(self) -> Iterator[ArchiveMessage]:
        for c, mid, seq, m, root in self._walk():
            members = set(c.members)
            content = self._text(str(m.get("text") or ""))
            for f in m.get("files") or []:
                if isinstance(f, dict):
                    meta = ", ".join(
                        str(x)
                        for x in (f.get("mimetype"), f.get("size") and f"{f['size']} bytes")
                        if x
                    )
                    label = f.get("name") or f.get("title") or "file"
                    line = f"[file: {label}" + (f" ({meta})" if meta else "") + "]"
                    content = f"{content}\n{line}" if content else line
            sender = self._users.get(str(m.get("user") or ""), self._bot)
            mentioned = {int(x) for x in re.findall(r"<@([0-9]+)>", content) if int(x) in members}
            edited = m.get("edited") if isinstance(m.get("edited"), dict) else None
            yield ArchiveMessage(
                id=mid,
                chat_id=c.id,
                seq=seq,
                sender_id=sender,
                content=content,
                files=(),
                reply_to=None,
                client_id=None,
                created_at=slack_time(m["ts"]),
                edited_at=slack_time(edited["ts"]) if edited and edited.get("ts") else None,
                deleted=False,
                thread_id=root,
                reply_count=0,
                last_reply_at=None,
                mentions=tuple(sorted(mentioned)),
                mentions_channel="<!channel>" in content,
            )

    def reactions(self) -> Iterator[ArchiveReaction]:
        for _, mid, _, m, _ in self._walk():
            for r in m.get("reactions") or []:
                if not isinstance(r, dict) or not r.get("name"):
                    continue
                emoji = reaction_emoji(str(r["name"]))
                if emoji is None:
                    continue
                for u in dict.fromkeys(r.get("users") or []):
                    uid = self._users.get(str(u))
                    if uid is not None:
                        yield ArchiveReaction(mid, uid, emoji, slack_time(m["ts"]))

    def _text(self, text: str) -> str:
        """Slack's markup in our syntax: user tokens renamed, ``<!here>``/``<!everyone>`` as
        ``<!channel>``, channel and link tokens as text, the three HTML escapes undone."""

        def swap(match: re.Match[str]) -> str:
            body, _, label = match.group(1).partition("|")
            if body.startswith("@"):
                uid = self._users.get(body[1:])
                return f"<@{uid}>" if uid is not None else f"@{label or body[1:]}"
            if body in ("!channel", "!here", "!everyone"):
                return "<!channel>"
            if body.startswith("#"):
                return f"#{label or body[1:]}"
            if body.startswith("!"):
                return label or body
            return f"{label} ({body})" if label and label != body else body

        out = _TOKEN.sub(swap, text)
        return out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _value(obj: Any) -> str | None:
    if isinstance(obj, dict) and isinstance(obj.get("value"), str) and obj["value"].strip():
        return str(obj["value"]).strip()
    return None


def reaction_emoji(name: str) -> str | None:
    """Our stored form of a Slack reaction name (``thumbsup``, ``+1::skin-tone-2``): a known
    name as its emoji, an unknown (custom) one as a ``:shortcode:``; None when it fits
    neither (longer than 32 characters, other characters)."""
    base = name.split("::", 1)[0]
    try:
        return canonical_emoji(f":{base}:")
    except Invalid:
        return None
