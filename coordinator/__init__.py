"""Baton's coordinator: pre-flight, negotiation, the migration runner, policies, CLI and NATS API.

``coordinator.client`` holds the NATS plumbing every coordinator component shares (connect,
typed requests, agent discovery); ``coordinator.cli`` is the ``baton`` command.
"""
