import types

from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper


class DatabaseWrapper(SQLiteWrapper):
    """The mysql vendor through a driver that is not mysqlclient."""

    vendor = "mysql"
    Database = types.ModuleType("mysql.connector")
