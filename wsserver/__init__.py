"""wsserver: a WebSocket notification sidecar for Django.

The sidecar (``python -m wsserver``) authenticates browsers with django-sesame
tokens against the main site's database and pushes the main site's admin
events, read from Redis, to the users allowed to see them. The main site
installs :mod:`wsserver.publisher`, which publishes those events.

This module stays empty so that the main site can import the publisher app
without loading the sidecar.
"""

__version__ = "0.1.0"
