from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper


class DatabaseWrapper(SQLiteWrapper):
    """A vendor the sidecar does not know, in a module named postgresql."""

    vendor = "acme"
