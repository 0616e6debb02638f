"""Baton's wire contract: messages, subjects, error codes and the JSON codec.

Pure data and functions; imports neither nats nor libvirt, so any component (or a client in
another language, through the exported JSON Schema in ``schemas/json``) can rely on it.
"""

PROTOCOL_VERSION = "0.1.0"
