"""The spool: :class:`spoolkit.Spool` and the consumer workers that drain it to a sink.

``facade`` is :class:`~spoolkit.Spool`; ``pool`` the consumer workers and their batching;
``supervisor`` the policy that restarts crashed and stuck workers; ``stats`` its counters;
``deferred`` durable outbound calls; ``aio`` and ``async_sink`` the asyncio side. Users import
from :mod:`spoolkit`.
"""
