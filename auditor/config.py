"""``vecaudit.toml``: the scan's source, field map, detector selection and parameters, ledger.

Flags override the file; an unknown key is an error that names it (no silently ignored typos).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import ConfigError

DEFAULT_CONFIG_FILE = "vecaudit.toml"

# Allowed keys per table; values are the expected Python types (checked) or None for "any JSON value".
_SCHEMA: dict[str, dict[str, Any]] = {
    "": {
        "source": str,
        "collection": str,
        "vector": str,
        "ledger": str,
        "batch_size": int,
        "fail_on": str,
        "alert_on": str,
        "grpc": bool,
        "state_dir": str,
        "fields": dict,
        "detectors": dict,
        "embedding": dict,
        "tenancy": dict,
        "hub": dict,
        "quarantine": dict,
        "notify": dict,
        "engine": dict,
    },
    "fields": {"text": str, "tenant": str, "doc_id": str, "timestamp": str},
    "embedding": {"model": str, "device": str, "batch_size": int, "sample": (str, int, float)},
    "tenancy": {"tenants": list, "probe": bool, "probe_filter": dict, "markers": dict},
    "hub": {"queries": str},
    "quarantine": {"mode": str, "flag_field": str},
    "notify": {"url": str},
    "engine": {"kind": str, "address": str, "workers": int, "gpus_per_embedder": (int, float), "graph": str},
}

#: Scan engines: the default in-process one, and Ray (auditor.ray_engine, the optional `vecaudit[ray]` extra).
ENGINE_KINDS = ("inprocess", "ray")


@dataclass
class Config:
    """The parsed configuration (all optional); ``path`` is where it came from, if anywhere."""

    path: Path | None = None
    source: str | None = None
    collection: str | None = None
    vector: str | None = None
    ledger: str | None = None
    batch_size: int | None = None
    fail_on: str | None = None
    alert_on: str | None = None
    grpc: bool | None = None
    state_dir: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    detectors_enable: list[str] | None = None
    detectors_disable: list[str] = field(default_factory=list)
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    embedding: dict[str, Any] = field(default_factory=dict)
    tenancy: dict[str, Any] = field(default_factory=dict)
    hub: dict[str, Any] = field(default_factory=dict)
    quarantine: dict[str, Any] = field(default_factory=dict)
    notify: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)


def check_embed_sample(value: str | int | float, where: str = "--embed-sample") -> str:
    """``value`` as the scan settings keep it, once it is a positive count, a fraction in (0, 1] or "all"."""
    text = str(value).strip().lower()
    try:
        number = None if text == "all" else float(text)
    except ValueError:
        number = float("nan")
    if isinstance(value, bool) or (number is not None and not (number > 0 and (number <= 1 or number.is_integer()))):
        raise ConfigError(f"bad {where} {value!r}", hint="give a count (5000), a fraction (0.1) or 'all'")
    return text


def _check_engine(engine: dict[str, Any], where: str) -> None:
    """``[engine]``: a known kind, a positive worker count, a non-negative GPU share."""
    if engine.get("kind", "inprocess") not in ENGINE_KINDS:
        raise ConfigError(f"'engine.kind' in {where} must be one of {', '.join(ENGINE_KINDS)}, not {engine['kind']!r}")
    workers = engine.get("workers")
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ConfigError(f"'engine.workers' in {where} must be a positive integer, not {workers!r}")
    if engine.get("graph", "auto") not in ("auto", "driver", "distributed"):
        raise ConfigError(f"'engine.graph' in {where} must be \"auto\", \"driver\" or \"distributed\", "
                          f"not {engine['graph']!r}")
    gpus = engine.get("gpus_per_embedder")
    if gpus is not None and (isinstance(gpus, bool) or gpus < 0):
        raise ConfigError(f"'engine.gpus_per_embedder' in {where} must be a number >= 0 (0: CPU actors), not {gpus!r}")


def _check_table(table: dict[str, Any], section: str, where: str) -> None:
    schema = _SCHEMA[section]
    for key, value in table.items():
        dotted = f"{section}.{key}" if section else key
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"unknown key {dotted!r} in {where}", hint=f"known keys here: {known}")
        expected = schema[key]
        if expected is not None and not isinstance(value, expected):
            names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
            raise ConfigError(f"{dotted!r} in {where} must be a {names}, not {type(value).__name__}")


def load_config(path: str | Path | None, *, known_detectors: set[str] | None = None) -> Config:
    """Read ``path`` (or ``./vecaudit.toml`` when it exists and ``path`` is None); an empty Config otherwise."""
    if path is None:
        default = Path(DEFAULT_CONFIG_FILE)
        if not default.is_file():
            return Config()
        path = default
    p = Path(path)
    where = str(p)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {where} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {where} is not valid TOML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {where}: {e}") from e
    _check_table(data, "", where)
    for section in ("fields", "embedding", "tenancy", "hub", "quarantine", "notify", "engine"):
        if section in data:
            _check_table(data[section], section, where)
    if data.get("alert_on") not in (None, "changed", "all"):
        raise ConfigError(f"'alert_on' in {where} must be \"changed\" or \"all\", not {data['alert_on']!r}")
    _check_engine(data.get("engine", {}), where)
    if "sample" in data.get("embedding", {}):
        check_embed_sample(data["embedding"]["sample"], f"'embedding.sample' in {where}:")
    cfg = Config(
        path=p,
        source=data.get("source"),
        collection=data.get("collection"),
        vector=data.get("vector"),
        ledger=data.get("ledger"),
        batch_size=data.get("batch_size"),
        fail_on=data.get("fail_on"),
        alert_on=data.get("alert_on"),
        grpc=data.get("grpc"),
        state_dir=data.get("state_dir"),
        fields=dict(data.get("fields", {})),
        embedding=dict(data.get("embedding", {})),
        tenancy=dict(data.get("tenancy", {})),
        hub=dict(data.get("hub", {})),
        quarantine=dict(data.get("quarantine", {})),
        notify=dict(data.get("notify", {})),
        engine=dict(data.get("engine", {})),
    )
    detectors = dict(data.get("detectors", {}))
    enable = detectors.pop("enable", None)
    disable = detectors.pop("disable", [])
    for name, value in (("detectors.enable", enable), ("detectors.disable", disable)):
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{name!r} in {where} must be a list of detector names")
    cfg.detectors_enable = enable
    cfg.detectors_disable = list(disable)
    for name, params in detectors.items():
        if not isinstance(params, dict):
            raise ConfigError(f"'detectors.{name}' in {where} must be a table of parameters")
        if known_detectors is not None and name not in known_detectors:
            raise ConfigError(
                f"unknown detector {name!r} in {where} (detectors.{name})",
                hint=f"known detectors: {', '.join(sorted(known_detectors))}",
            )
        cfg.detector_params[name] = params
    for name in [*(enable or []), *disable]:
        if known_detectors is not None and name not in known_detectors:
            raise ConfigError(
                f"unknown detector {name!r} in {where}", hint=f"known detectors: {', '.join(sorted(known_detectors))}"
            )
    return cfg
