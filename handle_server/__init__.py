"""handle-server: a Handle System resolver and registry with the Handle.Net JSON REST API."""

from __future__ import annotations

from typing import Any

__all__ = ["Config", "ConfigError", "create_app", "load_config"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the service or the serializers does not load the HTTP layer.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in {"Config", "ConfigError", "load_config"}:
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'handle_server' has no attribute {name!r}")
