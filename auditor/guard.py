"""Retrieval guard: the one filter clause a RAG app adds so points quarantined in tag mode never come back.

Qdrant (this helper)::

    from auditor.guard import exclude_quarantined
    client.query_points("docs", query=vec, query_filter=exclude_quarantined(my_filter), limit=5)

Other stores (docs/connectors.md lists each idiom): for a
pgvector table with a jsonb ``metadata`` column it is ``WHERE NOT coalesce(metadata ? 'vecaudit_quarantine', false)``
(``NOT (metadata ? ...)`` alone would also drop rows whose payload is NULL).

Move mode needs no filter: the point is no longer in the live collection.
"""

from __future__ import annotations

from typing import Any

DEFAULT_FLAG_FIELD = "vecaudit_quarantine"


def quarantine_condition(flag_field: str = DEFAULT_FLAG_FIELD) -> Any:
    """The qdrant-client condition "this point carries no quarantine flag" (``IsEmptyCondition``)."""
    from qdrant_client import models

    return models.IsEmptyCondition(is_empty=models.PayloadField(key=flag_field))


def exclude_quarantined(filter: Any = None, flag_field: str = DEFAULT_FLAG_FIELD) -> Any:
    """A ``qdrant_client.models.Filter`` that keeps ``filter``'s conditions and drops quarantined points.

    ``filter`` may be None, a ``models.Filter`` or its dict form; the result is a new Filter with the guard
    added to ``must`` (so ``should``/``must_not`` keep their meaning). Pass it as ``query_filter=`` to
    ``query_points``/``search`` or ``scroll_filter=`` to ``scroll``.
    """
    from qdrant_client import models

    if filter is None:
        base = models.Filter()
    elif isinstance(filter, models.Filter):
        base = filter
    elif isinstance(filter, dict):
        base = models.Filter.model_validate(filter)
    else:
        raise TypeError(f"filter must be a qdrant_client.models.Filter, a dict or None, not {type(filter).__name__}")
    must = base.must
    if must is None:
        must_list: list[Any] = []
    elif isinstance(must, list):
        must_list = list(must)
    else:
        must_list = [must]
    return base.model_copy(update={"must": [*must_list, quarantine_condition(flag_field)]})
