"""The relational ledger: scans, point provenance, findings, reviews and quarantine actions."""

from auditor.ledger.session import Ledger, default_ledger_url

__all__ = ["Ledger", "default_ledger_url"]
