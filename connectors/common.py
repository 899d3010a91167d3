"""Helpers shared by the connectors: distance names, collection/table resolution, credential rules and the
wrapping of backend exceptions into one clear vecaudit error."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    elif vectors:
        raise ConfigError(f"{where} has {len(vectors)} vector columns",
                          hint=f"choose one with ?vector=COL ({', '.join(vectors)})")
    else:
        types = ", ".join(f"{f.name} ({f.type})" for f in list(schema)[:20])
        raise ConfigError(f"{where} has no vector column (a list of floats)",
                          hint=f"columns: {types}; re-export the vectors as lists of floats")
    id_column = id_column or "id"
    if id_column not in names:
        raise ConfigError(f"no id column {id_column!r} in {where}", hint=f"name it with ?id=COL ({', '.join(names)})")
    return vector, id_column


def arrow_vector_dim(schema: Any, vector: str) -> int | None:
    """The dimension of a fixed-size list column; None for variable-length lists."""
    import pyarrow as pa

    vtype = schema.field(vector).type
    return int(vtype.list_size) if pa.types.is_fixed_size_list(vtype) else None


def majority_length(counts: Mapping[int, int]) -> int:
    """The most common vector length in ``{length: rows}`` (ties: the longer), 0 when there is none.

    A collection's dimension is what most of its vectors have, never what its first row has: one odd first
    row must not turn every other point into a wrong-dimension finding (and blind the graph detectors)."""
    usable = {length: n for length, n in counts.items() if length > 0 and n > 0}
    return max(usable, key=lambda length: (usable[length], length)) if usable else 0


def arrow_vector_lengths(batches: Iterable[Any]) -> Counter[int]:
    """``{length: rows}`` of a list column read as Arrow record batches of that one column (nulls left out)."""
    import pyarrow.compute as pc

    counts: Counter[int] = Counter()
    for batch in batches:
        for entry in pc.value_counts(pc.list_value_length(batch.column(0))).to_pylist():
            if entry["values"] is not None:
                counts[int(entry["values"])] += int(entry["counts"])
    return counts


def arrow_points(table: Any, *, vector: str, id_column: str) -> tuple[list[Any], list[Any], list[dict[str, Any]]]:
    """Ids, vectors (1-D arrays as stored, None for nulls) and payload dicts of an Arrow batch or table."""
    import numpy as np
    import pyarrow as pa

    ids = arrow_pylist(table.column(id_column))
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
    rest = table.drop_columns([vector, id_column])
    try:
        payloads = rest.to_pylist()
    except UnicodeDecodeError:  # a string column with invalid UTF-8: read column by column, losslessly
        names = rest.column_names
        columns = [arrow_pylist(rest.column(name)) for name in names]
        payloads = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    return ids, vectors, payloads


def arrow_pylist(column: Any) -> list[Any]:
    """An Arrow column as Python values. Strings that are not valid UTF-8 (Arrow does not check what another
    writer put in a Parquet file) do not fail the read: their bytes are decoded with ``surrogateescape`` so the
    boundary sanitiser (auditor.textsafety) escapes and flags them."""
    try:
        return list(column.to_pylist())
    except UnicodeDecodeError:
        return [_decode_bytes(v) for v in column.cast(_bytes_type(column.type)).to_pylist()]


def _bytes_type(arrow_type: Any) -> Any:
    """``arrow_type`` with every string type replaced by the matching binary type (a zero-copy cast)."""
    import pyarrow as pa

    if pa.types.is_string(arrow_type):
        return pa.binary()
    if pa.types.is_large_string(arrow_type):
        return pa.large_binary()
    if pa.types.is_list(arrow_type):
        return pa.list_(arrow_type.value_field.with_type(_bytes_type(arrow_type.value_type)))
    if pa.types.is_large_list(arrow_type):
        return pa.large_list(arrow_type.value_field.with_type(_bytes_type(arrow_type.value_type)))
    if pa.types.is_struct(arrow_type):
        return pa.struct([f.with_type(_bytes_type(f.type)) for f in arrow_type])
    return arrow_type


def _decode_bytes(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {k: _decode_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_bytes(v) for v in value]
    return value


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
