"""Alembic environment and versions: the only way the clinic's schema changes."""
