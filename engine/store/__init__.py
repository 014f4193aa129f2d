"""The user store: tables, the database connection and migrations."""

from engine.store.database import Store, open_store

__all__ = ["Store", "open_store"]
