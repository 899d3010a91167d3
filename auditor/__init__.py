"""vecaudit core: contracts, scan engine, ledger, quarantine and CLI of the vector store auditor."""

__version__ = "0.1.0"
