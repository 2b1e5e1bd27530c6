"""The resolver proxy, as hdl.handle.net serves browsers: ``GET /{handle}`` redirects to the
handle's location (``locations``: URL values and 10320/loc lists) or shows its public values
(``pages``); ``views`` holds the handlers."""
