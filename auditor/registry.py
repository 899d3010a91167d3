"""Plugin registry: built-in and third-party connectors and detectors, found through entry points."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from auditor.connector import Connector, SourceURI
from auditor.detector import Detector
from auditor.errors import ConfigError

CONNECTOR_GROUP = "vecaudit.connectors"
DETECTOR_GROUP = "vecaudit.detectors"


@dataclass(frozen=True)
class PluginInfo:
    group: str
    name: str
    target: str
    loaded: Any | None
    error: str | None


def _load(group: str) -> list[PluginInfo]:
    infos = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            obj = ep.load()
            infos.append(PluginInfo(group, ep.name, ep.value, obj, None))
        except Exception as e:  # a broken plugin must not take the tool down; it is reported instead
            infos.append(PluginInfo(group, ep.name, ep.value, None, f"{type(e).__name__}: {e}"))
    return infos


def plugins() -> list[PluginInfo]:
    """All registered connectors and detectors, with load errors instead of exceptions."""
    return _load(CONNECTOR_GROUP) + _load(DETECTOR_GROUP)


def detector_classes() -> dict[str, type[Detector]]:
    """Detector classes by name (their entry-point name)."""
    found: dict[str, type[Detector]] = {}
    for info in _load(DETECTOR_GROUP):
        if info.loaded is not None:
            found[info.name] = info.loaded
    return found


def connector_for(uri: str, **kwargs: Any) -> Connector:
    """Instantiate the connector whose scheme matches ``uri`` (no I/O happens yet)."""
    parsed = SourceURI.parse(uri)
    schemes: list[str] = []
    for info in _load(CONNECTOR_GROUP):
        cls = info.loaded
        if cls is None:
            continue
        schemes.extend(cls.schemes)
        if parsed.scheme in cls.schemes:
            return cls(parsed, **kwargs)
    raise ConfigError(
        f"no connector for scheme {parsed.scheme!r} in {uri!r}",
        hint=f"known schemes: {', '.join(sorted(schemes))}; `vecaudit plugins list` shows what is installed",
    )
