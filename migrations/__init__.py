"""Alembic script directory of the vecaudit ledger (a package so it ships inside the wheel)."""
