"""Database layer: engine and sessions, tables, Alembic migrations."""
