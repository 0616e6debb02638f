"""NATS plumbing every Baton process shares: connecting, typed request/reply (the client side),
the typed handler (the service side), daemon lifecycle and log set-up.

Imports ``baton.schemas``, nats-py, msgspec and structlog only; the agent, the coordinator and
the CLI build on it and never on each other.
"""
