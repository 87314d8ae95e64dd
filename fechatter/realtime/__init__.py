"""The realtime listener: SSE and WebSocket streams on plain trio sockets."""
