"""Who is asking and what they may do: identities (``index:handle``), authentication by HTTP
Basic or a session's challenge-response (``authenticator``, ``sessions``), failed-attempt
throttling (``throttle``), secret keys kept encrypted (``secrets``), and the reference server's
HS_ADMIN permission rules (``authorizer``, ``permissions``). No HTTP here."""
