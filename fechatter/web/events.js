// Live events from the stream, applied to the state and the page; `resync` refetches quietly.

import { $ } from "./dom.js";
import { api, state } from "./state.js";
import { dropChat, learnPeer, loadWorkspaces, needsPeers, refreshOnline, renderChatList, showEmpty } from "./chatlist.js";
import { cancelEdit, settle } from "./composer.js";
import { onWorkspaceEvent } from "./invites.js";
import { renderMembers } from "./members.js";
import { clearNotification } from "./notify.js";
import { applyMuted, applyPresence, learnStatuses } from "./status.js";
import { applyReaction, tombstone, upsertMessage } from "./store.js";
import { addMessages, loadChatMembers, onMessage, renderHeader, renderMessages, renderTyping } from "./timeline.js";

export async function onEvent(name, data) {
  switch (name) {
    case "message.created":
      if (data.client_id && state.pending.has(data.client_id) && data.sender_id === state.me.id) settle(data);
      else onMessage(data);
      break;
    case "message.updated":
      upsertMessage(data);
      break;
    case "message.deleted":
      tombstone(data.chat_id, data.id);
      if (state.editing?.id === data.id) cancelEdit();
      break;
    case "reaction.added":
    case "reaction.removed":
      applyReaction(name === "reaction.added", data);
      break;
    case "chat.member_updated":
      if (state.chatMembers.has(data.chat_id)) {
        await loadChatMembers(data.chat_id);
        if (data.chat_id === state.current) {
          renderMessages(false, true); // what we may delete can have changed
          if (!$("#members-panel").hidden) renderMembers();
        }
      }
      break;
    case "chat.created":
    case "chat.updated":
      if (!state.workspaces.some((w) => w.id === data.workspace_id)) {
        // Someone added us to a workspace and a chat in it: show it (switch if we had none).
        await loadWorkspaces(state.wsId ?? data.workspace_id);
      } else if (data.workspace_id === state.wsId) {
        const known = state.chats.get(data.id);
        // The event carries the author's view of counts (and no mute); keep ours.
        state.chats.set(data.id, known ? { ...data, unread_count: known.unread_count, mention_count: known.mention_count, muted: known.muted ?? false } : { ...data, unread_count: 0, mention_count: 0, muted: false });
        if (needsPeers(data)) await learnPeer(data);
        if (name === "chat.created") await refreshOnline(); // presence of new chat partners
        renderChatList();
        if (data.id === state.current) renderHeader();
      }
      break;
    case "chat.deleted":
      dropChat(data.id);
      break;
    case "chat.member_added":
      if (data.user_ids.includes(state.me.id)) {
        const chat = await api.get(`/api/chats/${data.chat_id}`).catch(() => null);
        if (chat && chat.workspace_id === state.wsId) {
          state.chats.set(chat.id, chat);
          if (needsPeers(chat)) await learnPeer(chat);
          renderChatList();
        }
      } else if (state.chats.has(data.chat_id)) {
        state.chats.get(data.chat_id).members_count += data.user_ids.length;
        if (state.chatMembers.has(data.chat_id)) await loadChatMembers(data.chat_id);
        if (data.chat_id === state.current) { renderHeader(); if (!$("#members-panel").hidden) renderMembers(); }
      }
      break;
    case "chat.member_removed":
      if (data.user_id === state.me.id) dropChat(data.chat_id);
      else if (state.chats.has(data.chat_id)) {
        state.chats.get(data.chat_id).members_count -= 1;
        if (state.chatMembers.has(data.chat_id)) await loadChatMembers(data.chat_id);
        if (data.chat_id === state.current) { renderHeader(); if (!$("#members-panel").hidden) renderMembers(); }
      }
      break;
    case "typing": {
      const map = state.typing.get(data.chat_id) ?? new Map();
      map.set(data.user_id, Date.now() + 10_000);
      state.typing.set(data.chat_id, map);
      renderTyping();
      setTimeout(renderTyping, 10_100);
      break;
    }
    case "read":
      if (data.user_id === state.me.id && state.chats.has(data.chat_id)) {
        const fresh = await api.get(`/api/chats/${data.chat_id}`).catch(() => null);
        if (fresh) {
          Object.assign(state.chats.get(data.chat_id), { unread_count: fresh.unread_count, mention_count: fresh.mention_count });
          if (!fresh.unread_count) clearNotification(data.chat_id); // read here or on another device
          renderChatList();
        }
      }
      break;
    case "presence":
      applyPresence(data); // re-renders the chat list, header and members panel
      break;
    case "chat.muted":
      applyMuted(data);
      break;
    case "resync":
      await resync();
      break;
    default:
      if (name.startsWith("workspace.")) await onWorkspaceEvent(name, data);
      break;
  }
}

// The server could not replay what we missed: refetch quietly, merging what we have.
async function resync() {
  if (!state.wsId) return;
  const [chats, online] = await Promise.all([
    api.get(`/api/chats?workspace_id=${state.wsId}`),
    api.get(`/api/online-users?workspace_id=${state.wsId}`),
  ]);
  state.chats = new Map(chats.map((c) => [c.id, c]));
  state.online = new Set(online.user_ids);
  learnStatuses(online);
  await Promise.all(chats.filter(needsPeers).map(learnPeer));
  for (const chatId of [...state.messages.keys()]) {
    if (!state.chats.has(chatId)) { state.messages.delete(chatId); continue; }
    const box = state.messages.get(chatId);
    let after = box.items[box.items.length - 1]?.id;
    for (;;) {
      const page = after
        ? await api.get(`/api/chats/${chatId}/messages?limit=200&after=${after}`)
        : await api.get(`/api/chats/${chatId}/messages?limit=50`);
      addMessages(chatId, page.items);
      for (const m of page.items) upsertMessage(m);
      for (const m of page.items) if (m.client_id) state.pending.delete(m.client_id);
      if (!after || !page.has_more) break;
      after = page.items[page.items.length - 1].id;
    }
  }
  renderChatList();
  if (state.current && state.chats.has(state.current)) { renderHeader(); renderMessages(false); }
  else if (state.current) showEmpty("This chat is no longer available.", "It was deleted, or you left it.");
}
