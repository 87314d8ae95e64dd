"""Slack's standard workspace export as archive rows (issue 17; mapping in docs/archive.md).

``SlackSource`` reads the export zip (``users.json``, ``channels.json``, ``groups.json``,
``mpims.json``, ``dms.json``, and one folder of ``YYYY-MM-DD.json`` arrays per conversation)
and yields the rows of ``fechatter.storage.archive`` with ids of its own (1, 2, …), so the
one importer (``import_rows``) remaps and writes them like any archive. Each day file is parsed
once, when the source is made (one at a time, sorted by ``ts``: that is their ``seq``): its
message and reaction rows go to two temporary files (``messages()`` and ``reactions()`` read
them back), so memory holds one day file, not the export, and whether a "Slack bot" user is
needed is known before ``users()``. JSON sizes are capped per file (``MAX_SLACK_JSON``,
``MAX_SLACK_DAY``) and in total (``MAX_SLACK_TOTAL``), all by the declared (inflated) size,
before anything is inflated (docs/archive.md "Slack").

Pure over the zip: no database, no network (Slack's file URLs cannot be fetched, so files
become a line of metadata in the message).
"""

from __future__ import annotations

import json
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any, NamedTuple, Self

from fechatter.domain.archive_check import check_name
from fechatter.errors import Invalid
from fechatter.models import UserStatus, format_time, utc_now
from fechatter.reaction_emoji import canonical_emoji
from fechatter.schemas import EMAIL_RE
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
from fechatter.text import trim

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
# Our own markup (a mention, the channel alert) in text that is not one of ours: a word joiner
# after the "<" (invisible; the text reads the same) keeps it from naming anyone.
_OUR_MARKUP = re.compile(r"<(?=[@!])")
_OUR_TOKEN = re.compile(r"<@[0-9]+>|<!channel>")
NEUTRAL = "<\u2060"
# users.json, channels.json, … and each day file are JSON arrays read whole (parsed JSON takes
# up to ~26 times its size: ``[{},{},…]``): a member whose declared (inflated) size is over its
# cap is refused before it is inflated, and so is one that takes the export's JSON past
# the total (docs/archive.md "Slack").
MAX_SLACK_JSON = 32 * 1024 * 1024  # any file: users.json of ~20,000 full profiles
MAX_SLACK_DAY = 8 * 1024 * 1024  # a day file (one conversation, one day): rarely over a few MiB
MAX_SLACK_TOTAL = 1024 * 1024 * 1024  # every JSON file read, together (--slack-json-budget)


class _BadValue(Exception):
    """A Slack value that cannot be converted (``slack_time``)."""


def slack_time(ts: object) -> str:
    """RFC 3339 of a Slack ``ts`` (``"1700000000.000100"``: seconds.microseconds, or a
    number of seconds); ``ArchiveInvalid`` for anything else (``"yesterday"``, year 10000)."""
    try:
        whole, micro = _ts_key(ts)
        return format_time(datetime.fromtimestamp(whole, UTC).replace(microsecond=micro))
    except (ValueError, OverflowError, OSError):
        raise ArchiveInvalid(f"not a Slack timestamp: {str(ts)[:40]!r}") from None


def _ts_key(ts: object) -> tuple[int, int]:
    if isinstance(ts, bool) or not isinstance(ts, str | int | float):
        raise ValueError(ts)
    whole, _, frac = str(ts).partition(".")
    if not whole.isdigit() or not (frac == "" or frac.isdigit()) or len(whole) > 12:
        raise ValueError(ts)
    return int(whole), int((frac + "000000")[:6])


def _time_in(ts: object, where: str) -> str:
    try:
        return slack_time(ts)
    except ArchiveInvalid as exc:
        raise ArchiveInvalid(f"{where}: {exc}") from None


def split_content(text: str, limit: int) -> list[str]:
    """``text`` cut into parts of at most ``limit`` characters, each trimmed and not empty:
    at the last new line (else space) in the second half of a part, else at ``limit``,
    never inside a ``<@id>`` or ``<!channel>`` token."""
    parts: list[str] = []
    rest = trim(text)
    while len(rest) > limit:
        cut = max(rest.rfind("\n", limit // 2, limit + 1), rest.rfind(" ", limit // 2, limit + 1))
        if cut <= 0:
            cut = limit
        for token in _OUR_TOKEN.finditer(rest, max(0, cut - 20), cut + 20):
            if token.start() < cut < token.end():
                cut = token.start() if token.start() > 0 else token.end()
        part, rest = trim(rest[:cut]), trim(rest[cut:])
        if part:
            parts.append(part)
    if rest:
        parts.append(rest)
    return parts


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@dataclass(slots=True)
class _Conversation:
    id: int
    type: str
    folder: str
    name: str | None
    description: str | None
    created: str
    members: list[int] = field(default_factory=list)
    owner: int = 0


class SlackSource:
    """An ``ArchiveSource`` over a Slack export zip; ``ArchiveInvalid`` for a file that is
    not Slack's format."""

    def __init__(
        self,
        zf: zipfile.ZipFile,
        workspace_name: str,
        max_content_chars: int = 4000,
        max_json_bytes: int = MAX_SLACK_JSON,
        max_day_bytes: int = MAX_SLACK_DAY,
        max_total_bytes: int = MAX_SLACK_TOTAL,
    ) -> None:
        """Read the export: ``users.json`` and the conversation lists (at most
        ``max_json_bytes`` each), then every day file once (at most ``max_day_bytes``, and
        ``max_json_bytes``), all of them together at most ``max_total_bytes`` (declared,
        inflated sizes). ``ArchiveInvalid`` names the file or conversation at fault. Use as a
        context manager (or ``close()``): the rows wait in two temporary files."""
        # Owned by the source, closed by close() (or by __init__ when it fails).
        self._messages: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._reactions: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._read(
                zf,
                workspace_name,
                max_content_chars,
                max_json_bytes,
                max_day_bytes,
                max_total_bytes,
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Drop the temporary files (the rows not yet read)."""
        self._messages.close()
        self._reactions.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read(
        self,
        zf: zipfile.ZipFile,
        workspace_name: str,
        max_content_chars: int,
        max_json_bytes: int,
        max_day_bytes: int,
        max_total_bytes: int,
    ) -> None:
        self._zf = zf
        self._name = check_name(workspace_name, "the workspace name (choose with --workspace-name)")
        self._max_content = max_content_chars
        self._max_json = max_json_bytes
        self._max_day = min(max_day_bytes, max_json_bytes)
        self._budget = max_total_bytes
        self._inflated = 0  # declared bytes of the JSON files read so far
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
            email = profile.get("email")
            if not isinstance(email, str) or EMAIL_RE.match(email) is None:
                email = f"{raw['id'].lower()}@slack-import.invalid"
            self._rows.append(
                ArchiveUser(uid, name[:MAX_FULLNAME], str(email), None, PENDING, self._now)
            )
            if raw.get("is_primary_owner") and not self._owner:
                self._owner = uid
            if raw.get("is_owner") or raw.get("is_admin"):
                self._roles[uid] = "admin"
        if not self._rows:
            raise ArchiveInvalid("users.json: no users")
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
        # One "Slack bot" user, only when a message has no sender of users.json.
        self._bot = len(self._rows) + 1
        if self._spool():
            self._rows.append(
                ArchiveUser(self._bot, "Slack bot", BOT_EMAIL, None, PENDING, self._now)
            )

    def _json(self, name: str, *, required: bool, cap: int | None = None) -> list[Any]:
        if name not in self._names:
            if required:
                raise ArchiveInvalid(f"not a Slack export: {name} is missing")
            return []
        cap = self._max_json if cap is None else cap
        size = self._zf.getinfo(name).file_size
        if size > cap:
            raise ArchiveInvalid(f"{name}: {size} bytes, over the {cap} allowed")
        if self._inflated + size > self._budget:
            raise ArchiveInvalid(
                f"{name}: the export's JSON files come to over {self._budget} bytes (this one"
                f" {size}, those before it {self._inflated}); raise --slack-json-budget"
            )
        self._inflated += size
        try:
            with self._zf.open(name) as stream:
                value = json.loads(stream.read(cap + 1))
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
        listed = raw.get("members")
        members = list(
            dict.fromkeys(
                self._users[m]
                for m in (listed if isinstance(listed, list) else [])
                if isinstance(m, str) and m in self._users
            )
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
        created = _time_in(raw["created"], f"{folder}: created") if raw.get("created") else None
        named = kind in ("PublicChannel", "PrivateChannel")
        return _Conversation(
            len(self._chats) + 1,
            kind,
            folder,
            str(raw.get("name") or folder) if named else None,
            (_value(raw.get("purpose")) or _value(raw.get("topic"))) if named else None,
            created or self._now,
            members,
            owner,
        )

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
            yield ArchiveChat(
                c.id, c.type, c.name, c.description, c.owner, c.created, c.created, None
            )

    def members(self) -> Iterator[ArchiveMember]:
        for c in self._chats:
            for uid in c.members:
                role = "owner" if uid == c.owner else "member"
                yield ArchiveMember(c.id, uid, role, self._now, ALL_READ)

    def _kept(self, c: _Conversation) -> Iterator[tuple[str, dict[str, Any]]]:
        """The messages of ``c`` that are imported, as (day file, Slack message), in ``ts``
        order; ``ArchiveInvalid`` naming the day file for one that cannot be read."""
        prefix = c.folder + "/"
        days = sorted(n for n in self._names if n.startswith(prefix) and n.endswith(".json"))
        for day in days:
            items = [
                m for m in self._json(day, required=True, cap=self._max_day) if isinstance(m, dict)
            ]
            try:
                items.sort(key=lambda m: _ts_key(m["ts"]))
            except (KeyError, ValueError):
                raise ArchiveInvalid(f"{day}: a message without a valid ts") from None
            for m in items:
                subtype = m.get("subtype")
                if m.get("type", "message") != "message":
                    continue
                if not (subtype is None or isinstance(subtype, str)):
                    continue
                if subtype not in KEPT_SUBTYPES:
                    continue
                text = m.get("text")
                if not ((isinstance(text, str) and trim(text)) or m.get("files")):
                    continue
                yield day, m

    def _walk(self) -> Iterator[_Walked]:
        """Every imported message as (chat, id, seq, Slack message, thread root id, content,
        whether it is the first part).
        A text over ``max_content_chars`` becomes consecutive messages (continuations: the
        same sender, time and thread; the reactions go to the first)."""
        next_id = 0
        for c in self._chats:
            roots: dict[str, int] = {}
            seq = 0
            for _day, m in self._kept(c):
                ts = str(m["ts"])
                thread_ts = m.get("thread_ts")
                thread_ts = str(thread_ts) if isinstance(thread_ts, str | int | float) else None
                root = roots.get(thread_ts) if thread_ts and thread_ts != ts else None
                for n, part in enumerate(self._content(m)):
                    next_id += 1
                    seq += 1
                    if root is None and n == 0:
                        roots[ts] = next_id
                    yield _Walked(c, next_id, seq, m, root, part, n == 0)

    def _content(self, m: dict[str, Any]) -> list[str]:
        """The message's content in our syntax with its files as text lines, cut into parts
        of at most ``max_content_chars`` (``split_content``)."""
        text = m.get("text")
        content = self._text(text if isinstance(text, str) else "")
        files = m.get("files")
        for f in files if isinstance(files, list) else []:
            if isinstance(f, dict):
                meta = ", ".join(
                    str(x) for x in (f.get("mimetype"), f.get("size") and f"{f['size']} bytes") if x
                )
                label = f.get("name") or f.get("title") or "file"
                line = f"[file: {label}" + (f" ({meta})" if meta else "") + "]"
                line = _OUR_MARKUP.sub(NEUTRAL, line)
                content = f"{content}\n{line}" if content else line
        return split_content(content, self._max_content)

    def _spool(self) -> bool:
        """Parse every day file once, writing each imported message (``_walk``) to the
        messages file and its reactions to the reactions file, one JSON line per row; True
        when a message needs the "Slack bot" user. A DM in which someone else posted or
        reacted (an app, a bot, a user not one of the pair) becomes a Group of the two: a
        Single chat has two people (docs/archive.md)."""
        needs_bot = False
        for c, mid, seq, m, root, content, first in self._walk():
            where = f"{c.folder} message {str(m['ts'])[:40]}"
            sender = self._users.get(str(m.get("user") or ""), self._bot)
            needs_bot = needs_bot or sender == self._bot
            edited = m.get("edited") if isinstance(m.get("edited"), dict) else None
            created = _time_in(m["ts"], where)
            mentioned = {int(x) for x in re.findall(r"<@([0-9]+)>", content)}
            row = [
                mid,
                c.id,
                seq,
                sender,
                content,
                created,
                _time_in(edited["ts"], f"{where} edited.ts")
                if edited and edited.get("ts")
                else None,
                root,
                sorted(mentioned.intersection(c.members)),
                "<!channel>" in content,
            ]
            self._messages.write(json.dumps(row).encode() + b"\n")
            people = {sender}
            for uid, emoji in self._reacted(m) if first else ():
                people.add(uid)
                self._reactions.write(json.dumps([mid, uid, emoji, created]).encode() + b"\n")
            if c.type == "Single" and not people.issubset(c.members):
                c.type = "Group"
        return needs_bot

    def _reacted(self, m: dict[str, Any]) -> Iterator[tuple[int, str]]:
        """The (user, emoji) reactions of the Slack message ``m``, users of users.json."""
        listed = m.get("reactions")
        for r in listed if isinstance(listed, list) else []:
            if not isinstance(r, dict) or not r.get("name"):
                continue
            emoji = reaction_emoji(str(r["name"]))
            if emoji is None:
                continue
            users = r.get("users")
            listed_users = users if isinstance(users, list) else []
            for u in dict.fromkeys(u for u in listed_users if isinstance(u, str)):
                uid = self._users.get(u)
                if uid is not None:
                    yield uid, emoji

    def messages(self) -> Iterator[ArchiveMessage]:
        self._messages.seek(0)
        for line in self._messages:
            mid, chat, seq, sender, content, created, edited, root, mentions, alert = json.loads(
                line
            )
            yield ArchiveMessage(
                id=mid,
                chat_id=chat,
                seq=seq,
                sender_id=sender,
                content=content,
                files=(),
                reply_to=None,
                client_id=None,
                created_at=created,
                edited_at=edited,
                deleted=False,
                thread_id=root,
                reply_count=0,
                last_reply_at=None,
                mentions=tuple(mentions),
                mentions_channel=alert,
            )

    def reactions(self) -> Iterator[ArchiveReaction]:
        self._reactions.seek(0)
        for line in self._reactions:
            mid, uid, emoji, created = json.loads(line)
            yield ArchiveReaction(mid, uid, emoji, created)

    def _text(self, text: str) -> str:
        """Slack's markup in our syntax: user tokens renamed, ``<!here>``/``<!everyone>`` as
        ``<!channel>``, channel and link tokens as text. The HTML escapes (``&lt; &gt;
        &amp;``) are undone in the text around the tokens and in their labels, and any ``<@``
        or ``<!`` that results is neutralised (``NEUTRAL``): only a Slack token becomes a
        mention, never text someone typed."""
        pieces: list[str] = []
        real: set[int] = set()  # offsets in the output where one of our tokens starts
        length = 0
        last = 0
        for match in _TOKEN.finditer(text):
            for piece, ours in ((_unescape(text[last : match.start()]), False), self._swap(match)):
                if ours:
                    real.add(length)
                pieces.append(piece)
                length += len(piece)
            last = match.end()
        pieces.append(_unescape(text[last:]))
        out = "".join(pieces)
        return _OUR_MARKUP.sub(lambda m: m.group(0) if m.start() in real else NEUTRAL, out)

    def _swap(self, match: re.Match[str]) -> tuple[str, bool]:
        """One Slack token as (text, whether it is one of our tokens)."""
        body, _, label = match.group(1).partition("|")
        body, label = _unescape(body), _unescape(label)
        if body.startswith("@"):
            uid = self._users.get(body[1:])
            return (f"<@{uid}>", True) if uid is not None else (f"@{label or body[1:]}", False)
        if body in ("!channel", "!here", "!everyone"):
            return "<!channel>", True
        if body.startswith("#"):
            return f"#{label or body[1:]}", False
        if body.startswith("!"):
            return label or body, False
        return (f"{label} ({body})" if label and label != body else body), False


class _Walked(NamedTuple):
    chat: _Conversation
    id: int
    seq: int
    slack: dict[str, Any]
    root: int | None
    content: str
    first: bool


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
