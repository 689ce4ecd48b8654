"""The commands of :mod:`spoolkit.cli`, one module per family.

``common`` holds the exit codes, errors and output helpers every command shares; each
``*_cmd`` module defines the click command(s) of one family, registered on the group by
:mod:`spoolkit.cli`. Importing this package needs click and rich (the ``cli`` extra).
"""
