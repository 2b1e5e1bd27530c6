"""The ``handle-server`` command: ``serve`` and the store's maintenance (``main``), the
handle commands ``get``, ``create``, ``delete``, ``list`` and ``add-admin`` (``admin``), and
``export``/``import`` (``transfer``)."""

from .main import main

__all__ = ["main"]
