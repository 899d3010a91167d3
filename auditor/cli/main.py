"""The ``vecaudit`` click group: global flags, logging, and the one place errors become exit codes."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import click

from auditor import __version__
from auditor.errors import ExitCode, VecauditError
from auditor.masking import MaskingFormatter, redact_text


class VecauditGroup(click.Group):
    """Turns library errors into a one-line message and their exit code (traceback only with -v)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VecauditError as e:
            _report(ctx, f"error: {e}", e)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(ExitCode.INTERRUPTED)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as e:  # a bug: still one line, the traceback with -v
            _report(ctx, f"internal error: {type(e).__name__}: {e} (run with -v for the traceback)", e)
            ctx.exit(ExitCode.INCOMPLETE)


def _report(ctx: click.Context, message: str, exc: BaseException) -> None:
    if (ctx.obj or {}).get("verbose"):
        click.echo(redact_text("".join(traceback.format_exception(exc))), err=True, nl=False)
    click.echo(redact_text(message), err=True)


@click.group(cls=VecauditGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vecaudit")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or informational messages on stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """vecaudit: audit vector stores for poisoning, tampering, injection, secrets and cross-tenant leakage.

    \b
    Example:
      vecaudit scan qdrant+local:///data/store --collection docs --text-field text --tenant-field tenant
      vecaudit findings list --severity high
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    ctx.obj["quiet"] = quiet
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter("%(levelname)s %(name)s: %(message)s"))  # no raw secret in a log line
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    if not verbose:
        # third-party chatter (model loading, HTTP) is noise for a security report
        for noisy in ("sentence_transformers", "transformers", "httpx", "urllib3", "chromadb"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def _register() -> None:
    from auditor.cli import (
        calibration,
        db,
        demo,
        export,
        findings,
        history,
        plugins,
        quarantine,
        redteam,
        report,
        review,
        scan,
        scans,
        tenants,
    )

    modules = (
        scan, scans, findings, calibration, export, report, review, history, db, plugins, demo, redteam, quarantine,
        tenants,
    )
    for module in modules:
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="vecaudit")
