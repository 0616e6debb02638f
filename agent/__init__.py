"""The per-host agent: answers capability queries and publishes libvirt events over NATS."""

AGENT_VERSION = "0.1.0"
