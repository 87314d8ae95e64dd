"""Use cases: what a person can do, whatever transport asked (HTTP, a WebSocket op, the admin
command line, a cluster peer). Each module takes already-validated input and the caller's id,
applies the rules, talks to storage and the actors, and returns domain records or raises
``FechatterError``s. Nothing here knows about requests, responses or sockets.
"""
