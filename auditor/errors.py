"""One error hierarchy: every error carries the exit code it maps to and a message that says how to fix it."""

from __future__ import annotations


class ExitCode:
    """Process exit codes (cron/CI contract, see README "Exit codes")."""

    CLEAN = 0
    FINDINGS = 1
    USAGE = 2
    INCOMPLETE = 3
    LEDGER = 4
    INTERRUPTED = 130


class VecauditError(Exception):
    """Base of all vecaudit errors; ``exit_code`` is what the CLI exits with."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class ConfigError(VecauditError):
    """Bad flags, config file or URI: the user can fix it by changing the invocation."""

    exit_code = ExitCode.USAGE


class ConnectorError(VecauditError):
    """The store could not be read or written (unreachable, unknown collection, permission)."""

    exit_code = ExitCode.INCOMPLETE


class StoreNotFoundError(ConnectorError):
    """The collection or table named does not exist; a usage error, not a failed scan."""

    exit_code = ExitCode.USAGE


class LedgerError(VecauditError):
    """The ledger is unreachable, unwritable or its schema is not at head."""

    exit_code = ExitCode.LEDGER


class DetectorError(VecauditError):
    """A detector failed or was configured wrongly."""

    exit_code = ExitCode.USAGE


class QuarantineError(VecauditError):
    """A quarantine action was refused or could not be completed."""

    exit_code = ExitCode.INCOMPLETE
