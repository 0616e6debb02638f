"""Test helpers shared by the unit, integration and lab suites (real nats-server, fake agents)."""
