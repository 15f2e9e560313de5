"""The main site's half of wsserver: publish committed admin changes to Redis.

Add ``"wsserver.publisher"`` to the main site's ``INSTALLED_APPS``; every
:class:`~django.contrib.admin.models.LogEntry` that is committed is then
published on the Redis channel that the sidecar reads. Settings (all optional):

``WSSERVER_REDIS_URL``
    Redis to publish to. Default: ``"redis://127.0.0.1:6379/1"``, like the
    sidecar's ``REDIS_URL``.
``WSSERVER_CHANNEL``
    Channel to publish on. Default: ``"events"``, like ``WS_CHANNEL``.
``WSSERVER_SESAME_SCOPE``
    Scope of the tokens made by the template tag and the token view. Default:
    ``"wsserver"``, like ``WS_SESAME_SCOPE``: a scope of its own, so that
    these tokens are never login links for the site (django-sesame's login
    middleware and view accept only the default scope, ``""``).
``WSSERVER_HISTORY_SIZE``
    Events kept in a Redis Stream (``<channel>:history``) so that clients
    can resume after a disconnection; 0 disables history. Default: ``10000``,
    like the sidecar's ``WS_HISTORY_SIZE``.
``WSSERVER_PUBLISH_TIMEOUT``
    Seconds to wait for Redis before giving up (and logging). Default: ``2``.
"""
