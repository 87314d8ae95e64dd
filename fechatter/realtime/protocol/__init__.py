"""The realtime listener's sans-I/O core (the shape of h11 and websockets' ``Protocol``).

Objects here are fed bytes (or told how many bytes a write took) and answer with parsed heads,
client ops, frames to send and decisions; they are tested by feeding bytes, with no socket.

- ``CloseReason`` (``fechatter/close_reasons.py``, below the actors so they can name it too):
  why a stream ends, with its WebSocket close code.
- ``head``: ``HeadReader``, the HTTP/1.1 request head (h11) fed bytes; plain responses.
- ``ws``: ``WsReader``, inbound WebSocket frames (wsproto) → client ops, problems, closes.
- ``outbox``: ``Outbox``, one stream's bounded output queue and its states.
- ``timers``: ``Timers``, heartbeat, token-expiry and dead-peer deadlines.

Nothing in this package may import trio, touch a socket, read a clock or start a task: the
trio code in ``fechatter.realtime`` does that and only moves bytes and owns tasks.
"""
