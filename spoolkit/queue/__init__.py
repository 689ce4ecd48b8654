"""The queue engine: :class:`spoolkit.Queue` and the chunk files under it.

``facade`` is the pqueue-compatible :class:`~spoolkit.Queue`; ``store`` owns the chunk files
of one directory (``chunk``), their framing (``framing``), durability (``durability``,
``groupcommit``), recovery on open (``opening``, ``recovery``, ``meta``, ``migrate``) and
locks (``locks``); ``handout`` tracks what was handed out and not acknowledged; ``lanes``
lays out the per-process lanes of a spool directory. Users import from :mod:`spoolkit`.
"""
