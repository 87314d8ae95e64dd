"""Fechatter: a real-time team chat server on trio actors."""

__version__ = "0.1.0"
