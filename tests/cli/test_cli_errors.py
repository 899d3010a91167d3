"""User mistakes are found before a scan starts and reported in one line with the documented exit code: malformed
and credential-bearing store URIs, wrong-typed detector parameters, a bad ``--embed-sample``, a mistyped or
non-SQLite ledger path. Nothing is written: no scan row, no ledger file, and no secret echoed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import load_jsonl
from support import build_qdrant_store

from auditor.cli.main import cli
from auditor.errors import DetectorError, ExitCode
from auditor.registry import detector_classes

PASSWORD = "hunter2-Xq9v"


def run(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result: Any, code: int, needle: str) -> str:
    """The error line, after checking the exit code, that stderr is that one line, and no traceback."""
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.output and "[SQL:" not in result.output
    return str(lines[0])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, embed: Any) -> str:
    rows = load_jsonl("pubmed.jsonl")[:30]
    return build_qdrant_store(tmp_path_factory.mktemp("errors") / "store", embed([r["text"] for r in rows]),
                              [{"text": r["text"], "tenant": "acme"} for r in rows])


def scan_count(ledger_url: str) -> int:
    listed = run("scans", "list", "--ledger", ledger_url, "--format", "json")
    assert listed.exit_code == 0, listed.output
    return len(json.loads(listed.stdout)["scans"])


@pytest.fixture
def scanned_ledger(store: str, sqlite_ledger_url: str) -> str:
    """A ledger holding one completed scan of ``store``."""
    done = run("-q", "scan", store, "-c", "docs", "--text-field", "text", "-d", "integrity", "--ledger",
               sqlite_ledger_url, "--exit-zero")
    assert done.exit_code == 0, done.output
    return sqlite_ledger_url


@pytest.mark.parametrize("uri", ["http://[::1", "qdrant://[::1:6333", "qdrant://[fe80::1/x"])
def test_malformed_uri_is_a_usage_error_and_leaves_no_ledger(uri: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    one_line_error(run("scan", uri, "-c", "docs", "--ledger", f"sqlite:///{ledger}"), ExitCode.USAGE,
                   "malformed store URI")
    assert not ledger.exists()


@pytest.mark.parametrize(
    ("uri", "env_var"),
    [
        (f"qdrant://audit:{PASSWORD}@db.internal:6333", "QDRANT_API_KEY"),
        (f"qdrants://audit:{PASSWORD}@db.internal", "QDRANT_API_KEY"),
        (f"qdrant://{PASSWORD}@db.internal:6333", "QDRANT_API_KEY"),  # a key where the user name goes
        (f"pgvector://audit:{PASSWORD}@db.internal:5432/rag?table=docs", "PGPASSWORD"),
        (f"chroma+http://audit:{PASSWORD}@db.internal:8000", "CHROMA_AUTH_TOKEN"),
        (f"chroma+https://{PASSWORD}@db.internal", "CHROMA_AUTH_TOKEN"),
        (f"milvus://root:{PASSWORD}@db.internal:19530", "MILVUS_TOKEN"),
        (f"milvus+https://root:{PASSWORD}@db.internal", "MILVUS_TOKEN"),
        (f"lancedb://u:{PASSWORD}@/data/lance?table=docs", "takes no credentials"),
        (f"file://u:{PASSWORD}@/data/export.jsonl", "takes no credentials"),
    ],
)
def test_credentials_in_a_store_uri_are_refused_and_never_echoed(uri: str, env_var: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    line = one_line_error(run("scan", uri, "--ledger", f"sqlite:///{ledger}"), ExitCode.USAGE, env_var)
    assert PASSWORD not in line
    assert not ledger.exists()


def test_a_database_user_name_stays_allowed_for_pgvector() -> None:
    from auditor.registry import connector_for

    connector = connector_for("pgvector://audit@db.internal:5432/rag?table=docs")
    assert connector.uri.redacted() == "pgvector://audit@db.internal:5432/rag?table=docs"


def _wrong_value(default: Any, declared: type | None) -> Any:
    """A value of another type than the parameter declares."""
    kind = declared or type(default)
    return {bool: "yes", int: 2.5, float: "high", str: 3, list: "x", tuple: "x", dict: "x"}[kind]


PARAMS = [
    (name, key)
    for name, cls in sorted(detector_classes().items())
    for key, default in cls.defaults.items()
    if default is not None or key in cls.param_types
]


@pytest.mark.parametrize(("detector", "key"), PARAMS, ids=[f"{d}.{k}" for d, k in PARAMS])
def test_every_detector_parameter_is_checked_against_its_declared_type(detector: str, key: str) -> None:
    cls = detector_classes()[detector]
    default = cls.defaults[key]
    cls(**{key: default})  # its own default passes
    with pytest.raises(DetectorError) as refused:
        cls(**{key: _wrong_value(default, cls.param_types.get(key))})
    assert refused.value.exit_code == ExitCode.USAGE
    assert f"parameter {key!r} of detector {detector!r}" in str(refused.value)


def test_integer_passes_for_a_number_and_a_list_for_a_tuple() -> None:
    classes = detector_classes()
    assert classes["integrity"](norm_z=4).params["norm_z"] == 4
    assert classes["pii"](phone_regions=["DE"]).params["phone_regions"] == ["DE"]
    with pytest.raises(DetectorError, match="a list of strings"):
        classes["pii"](phone_regions=["DE", 49])


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ('[detectors.integrity]\nnorm_z = "high"\n', "parameter 'norm_z' of detector 'integrity' must be a number"),
        ('[detectors.outlier]\nk = 2.5\n', "parameter 'k' of detector 'outlier' must be an integer"),
        ('[detectors.outlier]\nmethod = "zzz"\n', "outlier method 'zzz' is unknown"),  # checked in begin()
        ("[embedding]\nsample = -3\n", "bad 'embedding.sample'"),
    ],
)
def test_bad_detector_settings_stop_the_scan_before_it_is_recorded(
    config: str, needle: str, store: str, scanned_ledger: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "vecaudit.toml"
    cfg.write_text(config)
    result = run("-q", "scan", store, "-c", "docs", "--text-field", "text", "-d", "integrity", "-d", "outlier",
                 "--config", cfg, "--ledger", scanned_ledger)
    one_line_error(result, ExitCode.USAGE, needle)
    assert scan_count(scanned_ledger) == 1


@pytest.mark.parametrize("sample", ["-3", "0", "1.5", "some", "nan"])
def test_bad_embed_sample_is_refused_before_any_scan_row(sample: str, store: str, scanned_ledger: str) -> None:
    result = run("-q", "scan", store, "-c", "docs", "--text-field", "text", "-d", "vector-text-mismatch",
                 f"--embed-sample={sample}", "--ledger", scanned_ledger)
    one_line_error(result, ExitCode.USAGE, f"bad --embed-sample {sample!r}")
    assert scan_count(scanned_ledger) == 1


@pytest.mark.parametrize(
    "command",
    [["scans", "list"], ["scans", "show", "1"], ["findings", "list"], ["history", "7"], ["db", "current"],
     ["db", "check"], ["tenants", "--collection", "docs"]],
)
def test_read_commands_never_create_a_ledger_at_a_mistyped_path(command: list[str], tmp_path: Path) -> None:
    typo = tmp_path / "vecaudit.bd"
    one_line_error(run(*command, "--ledger", f"sqlite:///{typo}"), ExitCode.LEDGER, f"there is no ledger at {typo}")
    assert not typo.exists()


def test_scan_and_db_upgrade_create_a_fresh_ledger(store: str, tmp_path: Path) -> None:
    upgraded = tmp_path / "upgraded.db"
    assert run("db", "upgrade", "--ledger", f"sqlite:///{upgraded}").exit_code == 0
    assert scan_count(f"sqlite:///{upgraded}") == 0
    scanned = tmp_path / "scanned.db"
    assert run("-q", "scan", store, "-c", "docs", "-d", "integrity", "--ledger", f"sqlite:///{scanned}").exit_code == 0
    assert scan_count(f"sqlite:///{scanned}") == 1


@pytest.mark.parametrize("command", [["scans", "list"], ["db", "current"], ["db", "upgrade"], ["scan", "{store}"]])
def test_a_ledger_file_that_is_not_sqlite_is_one_line(command: list[str], store: str, tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("these are my notes, not a database\n" * 20)
    args = [a.replace("{store}", store) for a in command]
    result = run(*args, "--ledger", f"sqlite:///{notes}")
    line = one_line_error(result, ExitCode.LEDGER, "file is not a database")
    assert "vecaudit scan" in line  # says what a ledger is
    verbose = run("-v", *args, "--ledger", f"sqlite:///{notes}")
    assert verbose.exit_code == ExitCode.LEDGER and "Traceback" in verbose.stderr  # -v shows more
    assert notes.read_text().startswith("these are my notes")
