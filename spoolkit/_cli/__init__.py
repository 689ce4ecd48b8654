"""The commands of :mod:`spoolkit.cli`, one module per family.

``common`` holds the exit codes, errors and output helpers every command shares, ``lanes``
what the commands say about a spool's lanes, ``requeue`` the dead-letter moves; each
``*_cmd`` module defines the click command(s) of one family, registered on the group by
:mod:`spoolkit.cli`. Importing this package needs click and rich (the ``cli`` extra).
"""
