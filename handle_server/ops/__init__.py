"""Running the server: Prometheus metrics, health and readiness (``metrics``, ``views``), the
access log, ``serve --workers`` (``workers``), the guard on connections (``connections``),
request slots (``limits``) and clients behind trusted proxies (``forwarded``)."""
