"""Column lists both SQL backends select records with (the row converters depend on the order)."""

USER_COLUMNS = "u.id, u.fullname, u.email, u.avatar, u.status, u.created_at"
WORKSPACE_COLUMNS = "w.id, w.name, w.description, w.owner_id, w.created_at, w.updated_at"
CHAT_COLUMNS = (
    "c.id, c.workspace_id, c.name, c.type, c.description, c.owner_id, c.created_at, c.updated_at"
)
MESSAGE_COLUMNS = (
    "m.id, m.chat_id, m.seq, m.sender_id, m.content, m.files, m.reply_to, m.client_id,"
    " m.created_at, m.edited_at"
)
