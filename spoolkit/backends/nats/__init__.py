"""The NATS JetStream backend: :class:`NatsBackend` (needs the ``nats`` extra).

The URL is checked first, without nats-py, by :mod:`spoolkit.backends.nats_url`.
"""

from spoolkit.backends.nats.backend import JetStreamMessage, NatsBackend

__all__ = ["JetStreamMessage", "NatsBackend"]
