"""The cluster (issue 12, docs/cluster.md): several nodes sharing PostgreSQL and NATS serve one
chat service. Each chat has one owner node running its ChatActor; other nodes forward commands
to it (``codec``: the versioned wire format of those commands, their replies and errors).

This package sits beside the actors (layer 2): it may import models, errors, storage, the bus
and the actors, never a transport or the process.
"""
