"""Chat routes: parse, call ``domain.chats``, serialise (SPEC §3 "Chats and members").

A route with a body checks visibility first, so a caller who may not see the chat gets the
same 404 whatever they send.
"""

from __future__ import annotations

from quart import Blueprint, Quart, Response

from fechatter.http.apidoc import ChatOut, ChatsQuery, MemberOut, doc
from fechatter.http.common import (
    Context,
    current_user_id,
    empty_response,
    json_response,
    query_int,
    read_json,
)
from fechatter.schemas import MAX_ID, ChatIn, ChatMembersIn, ChatPatch, ChatRoleIn


def register(app: Quart, ctx: Context) -> None:
    """Add the chat and chat-member routes to ``app``."""
    bp = Blueprint("chats", __name__)
    chats = ctx.chats

    @bp.get("/api/chats")
    @doc(
        "chats",
        "The caller's chats, most recently active first",
        query=ChatsQuery,
        ok={200: list[ChatOut]},
        errors=(400, 404),
    )
    async def list_chats() -> Response:
        user_id = await current_user_id(ctx)
        workspace_id = query_int("workspace_id", low=1, high=MAX_ID)
        if workspace_id is not None:
            await ctx.workspaces.role(workspace_id, user_id)
        found = await chats.of_user(user_id, workspace_id)
        return json_response([c.to_json() for c in found])

    @bp.post("/api/chats")
    @doc(
        "chats",
        "Create a chat (an existing Single for the pair: 200)",
        body=ChatIn,
        ok={200: ChatOut, 201: ChatOut},
        errors=(403, 404, 409),
    )
    async def create_chat() -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(ChatIn)
        await ctx.workspaces.role(body.workspace_id, user_id)
        view, created = await chats.create(
            user_id, body.workspace_id, body.type, body.name, body.description, body.members
        )
        return json_response(view.to_json(), 201 if created else 200)

    @bp.get("/api/chats/<id:chat_id>")
    @doc("chats", "A chat", ok={200: ChatOut}, errors=(404,))
    async def get_chat(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await chats.visible(chat_id, user_id)
        return json_response((await chats.view(chat_id, user_id)).to_json())

    @bp.put("/api/chats/<id:chat_id>")
    @doc(
        "chats",
        "Rename or describe a chat",
        body=ChatPatch,
        ok={200: ChatOut},
        errors=(403, 404, 409),
    )
    async def update_chat(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await chats.visible(chat_id, user_id)
        body = await read_json(ChatPatch)
        view = await chats.update(user_id, chat_id, body.name, body.description)
        return json_response(view.to_json())

    @bp.delete("/api/chats/<id:chat_id>")
    @doc("chats", "Delete a chat", ok={204: None}, errors=(403, 404))
    async def delete_chat(chat_id: int) -> Response:
        await chats.delete(await current_user_id(ctx), chat_id)
        return empty_response()

    @bp.get("/api/chats/<id:chat_id>/members")
    @doc("chats", "Members of a chat", ok={200: list[MemberOut]}, errors=(403, 404))
    async def list_members(chat_id: int) -> Response:
        members = await chats.members(await current_user_id(ctx), chat_id)
        return json_response([m.to_json() for m in members])

    @bp.post("/api/chats/<id:chat_id>/members")
    @doc("chats", "Add members", body=ChatMembersIn, ok={201: list[MemberOut]}, errors=(403, 404))
    async def add_members(chat_id: int) -> Response:
        user_id = await current_user_id(ctx)
        chat, _ = await chats.visible(chat_id, user_id)
        body = await read_json(ChatMembersIn)
        added = await chats.add_members(user_id, chat, body.user_ids)
        return json_response([m.to_json() for m in added], 201)

    @bp.delete("/api/chats/<id:chat_id>/members/<id:member_id>")
    @doc("chats", "Remove a member, or leave", ok={204: None}, errors=(403, 404))
    async def remove_member(chat_id: int, member_id: int) -> Response:
        await chats.remove_member(await current_user_id(ctx), chat_id, member_id)
        return empty_response()

    @bp.put("/api/chats/<id:chat_id>/members/<id:member_id>")
    @doc(
        "chats",
        "Set a member's role (owner only)",
        body=ChatRoleIn,
        ok={200: MemberOut},
        errors=(403, 404),
    )
    async def set_member_role(chat_id: int, member_id: int) -> Response:
        user_id = await current_user_id(ctx)
        await chats.visible(chat_id, user_id)
        body = await read_json(ChatRoleIn)
        member = await chats.set_role(user_id, chat_id, member_id, body.chat_role)
        return json_response(member.to_json())

    @bp.post("/api/chats/<id:chat_id>/join")
    @doc("chats", "Join a public channel", ok={200: MemberOut}, errors=(403, 404, 422))
    async def join(chat_id: int) -> Response:
        member = await chats.join(await current_user_id(ctx), chat_id)
        return json_response(member.to_json())

    app.register_blueprint(bp)
