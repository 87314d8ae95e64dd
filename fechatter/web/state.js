// The client's shared state: one object every module reads and updates, the API client, and
// the live stream (set on sign-in).

import { Api } from "./api.js";

export const state = {
  me: null,
  workspaces: [],
  wsId: null,
  users: new Map(), // user id -> {fullname, email, role}
  chats: new Map(), // chat id -> Chat
  current: null,
  messages: new Map(), // chat id -> {items: [], ids: Set, hasMore, loading}
  singlePeer: new Map(), // Single chat id -> the other user's id
  groupNames: new Map(), // unnamed Group chat id -> the other members' first names
  online: new Set(),
  typing: new Map(), // chat id -> Map(user id -> expiry ms)
  pending: new Map(), // client_id -> {chatId, content, failed}
  members: [],
  chatMembers: new Map(), // chat id -> [Member] (the open chats': mentions, roles)
  threads: new Map(), // root id -> {chatId, items: Map(id -> Message)} (thread panel replies)
  threadRoots: new Map(), // root id -> Message
  thread: null, // the open thread panel: {chatId, rootId}
  threadMentions: new Set(), // root ids with a reply mentioning me, thread not opened since
  editing: null, // the message being edited in the composer: {chatId, id, draft}
  divider: null, // the open chat's "New messages" divider: {chatId, id} (before message id)
};

// Late-bound hooks, so low modules can call up without import cycles at load time.
export const hooks = { signedOut: () => {} };

export const api = new Api(() => hooks.signedOut());

// The live stream and the client config, set by session.js.
export const session = { live: null, config: null };
