"""The Handle System's native protocol (RFC 3651/3652), as the CNRI reference speaks it.

Serving it: the messages (``codec``); what the server answers them (``service``, through the
same ``HandleService`` rules as the REST API); proofs of identity (``auth``: challenge and
response) and the reference's sessions (``sessions``); the server's key pair and signed
answers (``signing``); this site's HS_SITE (``site``); the transports (``tcp``, ``udp``, and
``views``: native messages POSTed to the HTTP port). Asking other sites, for global mode:
``client`` (the reference resolver's way) and ``remote`` (their records, cached)."""
