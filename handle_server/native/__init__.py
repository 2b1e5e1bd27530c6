"""The Handle System's native protocol (RFC 3651/3652), as the CNRI reference speaks it: the
messages (``codec``), what the server answers them (``service``, through the same
``HandleService`` rules as the REST API), and the transports (``tcp``; the HTTP interface's
``POST`` of ``application/x-hdl-message`` is in ``views``)."""
