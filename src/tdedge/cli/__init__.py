"""The ``tdedge`` command: one module per command or group, the options and printers
they share in ``common``, and the option blocks of ``serve`` beside it.

Nothing else in tdedge imports this package: it is where a user's words become
Settings, and from there every process gets what it needs.
"""

from tdedge.cli.root import main

__all__ = ["main"]
