"""Reports built from the ledger: the self-contained HTML report, SARIF 2.1.0 and the JSON export."""
