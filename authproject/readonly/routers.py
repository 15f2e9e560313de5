"""A database router that refuses every migration on the shared database."""

from typing import Any


class NeverMigrate:
    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return False
