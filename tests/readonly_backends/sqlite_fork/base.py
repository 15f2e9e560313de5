from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper


class DatabaseWrapper(SQLiteWrapper):
    """SQLite (vendor "sqlite"), in a module not named sqlite3."""
