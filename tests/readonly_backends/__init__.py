"""Tiny database backends for tests/test_readonly.py.

They prove that the sidecar decides how to open a database read-only by the
backend's vendor and driver, not by the name of its module:

- ``renamed``: PostgreSQL under another name (as PostGIS or a third-party
  backend would be): opened read-only like PostgreSQL;
- ``sqlite_fork``: SQLite under another name (as SpatiaLite): likewise;
- ``postgresql``: named like PostgreSQL, but of another vendor: refused;
- ``other_driver``: the mysql vendor through a driver other than
  mysqlclient, whose options the sidecar does not know: refused.
"""
