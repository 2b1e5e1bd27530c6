"""The Handle.Net JSON REST API: resolving, creating, changing and deleting handles
(``views``), listing and reverse lookup, the sessions endpoints (``sessions``), and the API's
own OpenAPI description and page (``openapi``). Thin handlers: the rules are the service's."""
