"""Baton's coordinator: pre-flight, negotiation, the migration and disk-move runners, and its NATS API.

A service only: the ``baton`` command is in ``baton.cli`` and the NATS plumbing in ``baton.mesh``.
"""
