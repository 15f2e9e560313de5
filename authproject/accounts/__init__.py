"""A user model compatible with the main site's custom one (WS_USER_* settings)."""
