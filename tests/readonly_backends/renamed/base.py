from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLWrapper


class DatabaseWrapper(PostgreSQLWrapper):
    """PostgreSQL (vendor "postgresql"), in a module not named postgresql."""
