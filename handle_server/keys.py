"""Typed keys of what the application holds."""

from __future__ import annotations

from aiohttp import web

from storage import HandleStore

from .api.hot import HotAnswers
from .config import Config
from .onezone.service import OnezoneService
from .ops.limits import ConcurrencyLimit
from .ops.metrics import Metrics
from .service import HandleService

__all__ = ["CONFIG", "HANDLE", "HOT", "LIMIT", "METRICS", "ONEZONE", "SERVICE", "STORE"]

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", HandleStore)
SERVICE = web.AppKey("service", HandleService)
ONEZONE = web.AppKey("onezone", OnezoneService)
METRICS = web.AppKey("metrics", Metrics)
LIMIT = web.AppKey("limit", ConcurrencyLimit)
#: Anonymous resolutions kept to be answered before routing (``api/hot.py``).
HOT = web.AppKey("hot", HotAnswers)
#: The handle a request is about, as the client spelled it (echoed in error answers).
HANDLE = web.RequestKey("handle", str)
