from django.db import connection


def database_error(instance, action):
    """A callable whose query fails in the database (e.g. a table not migrated
    yet, or a statement timeout): on PostgreSQL, it aborts the transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1/0")
    return {"users": [1]}
