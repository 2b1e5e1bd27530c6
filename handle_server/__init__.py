"""handle-server: a Handle System resolver and registry with the Handle.Net JSON REST API."""

from __future__ import annotations

from .app import create_app
from .config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "create_app", "load_config"]
__version__ = "0.1.0"
