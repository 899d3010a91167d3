"""Helpers shared by the connectors: distance names, collection/table resolution, credential rules and the
wrapping of backend exceptions into one clear vecaudit error."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from auditor.connector import SourceURI
from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError, VecauditError
from auditor.types import Distance

T = TypeVar("T")

# Every spelling the supported stores use for their metrics.
_DISTANCE_NAMES = {
    "cosine": Distance.COSINE, "cos": Distance.COSINE,
    "l2": Distance.EUCLID, "euclid": Distance.EUCLID, "euclidean": Distance.EUCLID,
    "ip": Distance.DOT, "dot": Distance.DOT, "inner_product": Distance.DOT,
    "l1": Distance.MANHATTAN, "manhattan": Distance.MANHATTAN,
}


def parse_distance(name: str | None) -> Distance | None:
    """A store's metric name (``cosine``, ``l2``, ``IP``, ``vector_cosine_ops`` ...) as a Distance, or None."""
    if not name:
        return None
    key = name.strip().lower().removeprefix("vector_").removesuffix("_ops")
    return _DISTANCE_NAMES.get(key)


def distance_option(uri: SourceURI, options: dict[str, Any]) -> Distance | None:
    """The distance the user declared with ``?distance=`` or ``options["distance"]`` (ConfigError if unknown)."""
    raw = options.get("distance") or uri.query.get("distance")
    if raw is None:
        return None
    found = parse_distance(str(raw))
    if found is None:
        raise ConfigError(f"unknown distance {raw!r}", hint="use one of: cosine, dot, euclid, manhattan")
    return found


def resolve_name(uri: SourceURI, collection: str | None, *, param: str, kind: str) -> str | None:
    """The table/collection named in the URI (``?param=``) or by ``--collection``; both must agree."""
    in_uri = uri.query.get(param)
    if in_uri and collection and in_uri != collection:
        raise ConfigError(
            f"the URI names {kind} {in_uri!r} but --collection says {collection!r}", hint="give the name once"
        )
    return in_uri or collection


def refuse_password_in_uri(uri: SourceURI, env_var: str) -> None:
    """Credentials come from environment variables only: a password written in the URI is refused."""
    from urllib.parse import urlsplit

    if uri.raw != ":memory:" and urlsplit(uri.raw).password:
        raise ConfigError(
            f"a password is written in the store URI {uri.redacted()}",
            hint=f"remove it from the URI and export {env_var} instead (URIs end up in logs and the ledger)",
        )


def call_backend(operation: str, where: str, fn: Callable[..., T], *args: Any,
                 not_found: Iterable[type[BaseException]] = (), **kwargs: Any) -> T:
    """Run a backend call; its exceptions become one ConnectorError (StoreNotFoundError for ``not_found``)
    naming the operation and the collection."""
    try:
        return fn(*args, **kwargs)
    except VecauditError:
        raise
    except tuple(not_found) as e:
        raise StoreNotFoundError(f"{operation}: {where} does not exist ({first_line(e)})") from e
    except Exception as e:
        raise ConnectorError(f"{operation} failed on {where}: {type(e).__name__}: {first_line(e)}") from e


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, bounded (backend messages can be pages long)."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


def arrow_vector_columns(schema: Any) -> list[str]:
    """Columns of an Arrow schema that hold float vectors (fixed-size or variable lists of floats)."""
    import pyarrow as pa

    return [f.name for f in schema
            if (pa.types.is_fixed_size_list(f.type) or pa.types.is_list(f.type) or pa.types.is_large_list(f.type))
            and pa.types.is_floating(f.type.value_type)]


def pick_arrow_columns(schema: Any, *, vector: str | None, id_column: str | None, where: str) -> tuple[str, str]:
    """The (vector, id) columns to read from an Arrow schema, with one clear ConfigError when they do not fit."""
    names = list(schema.names)
    vectors = arrow_vector_columns(schema)
    if vector:
        if vector not in names:
            raise ConfigError(f"no column {vector!r} in {where}", hint=f"columns: {', '.join(names)}")
        if vector not in vectors:
            raise ConfigError(f"column {vector!r} of {where} is {schema.field(vector).type}, not a list of floats",
                              hint=f"vector columns: {', '.join(vectors) or 'none'}")
    elif len(vectors) == 1:
        vector = vectors[0]
    else:
        raise ConfigError(f"{where} has {len(vectors)} vector columns",
                          hint=f"choose one with ?vector=COL ({', '.join(vectors) or 'none here'})")
    id_column = id_column or "id"
    if id_column not in names:
        raise ConfigError(f"no id column {id_column!r} in {where}", hint=f"name it with ?id=COL ({', '.join(names)})")
    return vector, id_column


def arrow_vector_dim(schema: Any, vector: str) -> int | None:
    """The dimension of a fixed-size list column; None for variable-length lists."""
    import pyarrow as pa

    vtype = schema.field(vector).type
    return int(vtype.list_size) if pa.types.is_fixed_size_list(vtype) else None


def arrow_points(table: Any, *, vector: str, id_column: str) -> tuple[list[Any], list[Any], list[dict[str, Any]]]:
    """Ids, vectors (1-D arrays as stored, None for nulls) and payload dicts of an Arrow batch or table."""
    import numpy as np
    import pyarrow as pa

    ids = table.column(id_column).to_pylist()
    column = table.column(vector)
    vectors: list[Any]
    if column.null_count:
        vectors = [None if value is None else np.asarray(value) for value in column.to_pylist()]
    else:
        values = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        flat = values.flatten().to_numpy(zero_copy_only=False)
        if pa.types.is_fixed_size_list(values.type):  # fixed-size list: one reshape, no per-row Python lists
            vectors = list(flat.reshape(len(ids), values.type.list_size)) if len(ids) else []
        else:
            offsets = values.offsets.to_numpy()
            offsets = offsets - offsets[0]  # flatten() honours a slice, raw offsets do not
            vectors = [flat[offsets[i]:offsets[i + 1]] for i in range(len(ids))]
    payloads = table.drop_columns([vector, id_column]).to_pylist()
    return ids, vectors, payloads


def guarded_iter(iterator: Iterable[T], operation: str, where: str) -> Iterator[T]:
    """Items of a backend iterator, with an error while reading turned into one ConnectorError."""
    it = iter(iterator)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except VecauditError:
            raise
        except Exception as e:
            raise ConnectorError(f"{operation} failed on {where}: {type(e).__name__}: {first_line(e)}") from e
        yield item
