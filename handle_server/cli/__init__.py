"""The ``handle-server`` command: its parser and which command runs what (``main``); ``serve``
(the server in this process or in workers, TLS, the event loop, signals, logging); the handle
commands ``get``, ``create``, ``delete``, ``list`` and ``add-admin`` (``admin``); the store's
maintenance: ``migrate``, ``check-config``, ``keygen``, ``export``, ``import``
(``maintenance``, with ``transfer`` for the export format's files and ``stores`` for opening
the configured store)."""

from .main import main

__all__ = ["main"]
