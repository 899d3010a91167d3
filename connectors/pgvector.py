"""pgvector connector: a PostgreSQL table with a ``vector`` column
(``pgvector://user@host:5432/db?table=T&vector=COL&id=COL``), read with keyset pagination in a read-only session."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from auditor.connector import Connector, Cursor, ProbeHit, SourceURI
from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError
from auditor.partitions import (
    DEFAULT_TARGET_POINTS,
    Partition,
    PartitionPlan,
    key_range_pages,
    key_range_plan,
    keyset_boundaries,
)
from auditor.types import CollectionInfo, Distance, PointBatch, PointId, StoredPoint
from connectors.common import (
    call_backend,
    distance_option,
    first_line,
    parse_distance,
    resolve_name,
)

# pgvector's distance operators: ORDER BY col <op> query gives nearest first.
_OPERATORS = {Distance.COSINE: "<=>", Distance.DOT: "<#>", Distance.EUCLID: "<->", Distance.MANHATTAN: "<+>"}


class PgvectorConnector(Connector):
    """Reads one table: ``id`` column, one pgvector ``vector`` column, payload from the other columns or from one
    JSONB column (``&payload=COL``).

    Query parameters: ``table`` (``schema.table`` allowed), ``vector`` (auto-detected when the table has one
    vector column), ``id`` (default: the single-column primary key, else ``id``), ``payload``, ``distance``
    (default: the opclass of a vector index on the column, else cosine, marked as assumed).
    Credentials: libpq's environment only (``PGPASSWORD``, ``PGPASSFILE``, ``PGSSLMODE``...); a password
    written in the URI is refused. The session is ``READ ONLY``; the cursor is the last id read.

    Quarantine (the only writes, each in its own explicit ``READ WRITE`` transaction): move, to a sibling table
    ``CREATE TABLE ... (LIKE source INCLUDING ALL)``; tag, a key merged into the JSONB payload column, so only with
    ``&payload=COL``. With ``&payload=COL`` move is refused when the table has columns outside the point (they
    would not survive a release). pgvector stores float32 as given: vectors come back bit-exact.
    """

    schemes = ("pgvector",)
    credentials_env = "PGPASSWORD"
    uri_user = True  # the PostgreSQL role
    capabilities = frozenset({"probe", "quarantine:tag", "quarantine:move"})

    def __init__(
        self, uri: SourceURI, *, collection: str | None = None, vector: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(uri, collection=resolve_name(uri, collection, param="table", kind="table"),
                         vector=vector or uri.query.get("vector"), options=options)
        self.id_column: str | None = uri.query.get("id")
        self.payload_column: str | None = uri.query.get("payload")
        self._conn: Any = None
        self._info: CollectionInfo | None = None
        self._columns: dict[str, str] = {}
        self._qualified: Any = None

    @property
    def where(self) -> str:
        return f"table {self.collection!r} at {self.uri.redacted()}"

    def connection(self) -> Any:
        if self._conn is None:
            import psycopg
            dbname = self.uri.path.lstrip("/") or None
            try:
                self._conn = psycopg.connect(
                    host=self.uri.host or None, port=self.uri.port or None, dbname=dbname,
                    user=self.uri.query.get("user") or _username(self.uri.raw),
                    connect_timeout=int(self.options.get("timeout", 10)), application_name="vecaudit",
                    autocommit=True,
                    # The audit must never write: every statement of this session runs read-only.
                    options="-c default_transaction_read_only=on",
                )
            except psycopg.Error as e:
                raise ConnectorError(
                    f"cannot connect to PostgreSQL at {self.uri.redacted()}: {first_line(e)}",
                    hint="check host, port, database and user; the password comes from PGPASSWORD or ~/.pgpass",
                ) from e
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
                self._info = None  # a reopened connection is described again: that registers the vector type

    def _query(self, operation: str, statement: Any, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self.connection()
        return call_backend(operation, self.where, lambda: conn.execute(statement, params).fetchall())

    # -- schema -------------------------------------------------------------------------------------
    def _resolve_table(self) -> Any:
        from psycopg import sql

        if not self.collection:
            raise ConfigError("no table given", hint=f"add ?table=NAME to the URI; vector tables here: "
                                                     f"{', '.join(self._vector_tables()) or 'none'}")
        parts = self.collection.split(".", 1)
        qualified = sql.Identifier(*parts)
        text = qualified.as_string(self.connection())
        oid = self._query("find table", "SELECT to_regclass(%s)::oid", [text])[0][0]
        if oid is None:
            raise StoreNotFoundError(f"table {self.collection!r} not found in {self.uri.redacted()}",
                                     hint=f"tables with a vector column: {', '.join(self._vector_tables()) or 'none'}")
        self._oid = int(oid)
        return qualified

    def _vector_tables(self) -> list[str]:
        rows = self._query(
            "list tables",
            "SELECT DISTINCT table_schema || '.' || table_name FROM information_schema.columns "
            "WHERE udt_name = 'vector' AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        )
        return [r[0] for r in rows]

    def _load_columns(self) -> None:
        rows = self._query(
            "read columns",
            "SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod), a.atttypmod FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum", [self._oid],
        )
        self._columns = {name: typname for name, typname, _, _ in rows}
        self._formats = {name: fmt for name, _, fmt, _ in rows}
        self._typmods = {name: int(mod) for name, _, _, mod in rows}

    def _pick_vector_column(self) -> str:
        vectors = [c for c, t in self._columns.items() if t == "vector"]
        if self.vector:
            if self.vector not in self._columns:
                raise ConfigError(f"no column {self.vector!r} in {self.where}",
                                  hint=f"columns: {', '.join(self._columns)}")
            if self._columns[self.vector] != "vector":
                raise ConfigError(
                    f"column {self.vector!r} of {self.where} is {self._formats[self.vector]}, not a pgvector vector",
                    hint=f"vector columns: {', '.join(vectors) or 'none'}",
                )
            return self.vector
        if len(vectors) != 1:
            raise ConfigError(
                f"{self.where} has {len(vectors)} vector columns", hint=f"choose one with &vector=COL "
                                                                        f"({', '.join(vectors) or 'none here'})"
            )
        return vectors[0]

    def _pick_id_column(self) -> str:
        if self.id_column:
            if self.id_column not in self._columns:
                raise ConfigError(f"no id column {self.id_column!r} in {self.where}",
                                  hint=f"columns: {', '.join(self._columns)}")
            return self.id_column
        pk = self._query(
            "read primary key",
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary", [self._oid],
        )
        if len(pk) == 1:
            return str(pk[0][0])
        if "id" in self._columns:
            return "id"
        raise ConfigError(f"{self.where} has no single-column primary key and no 'id' column",
                          hint=f"name the unique id column with &id=COL ({', '.join(self._columns)})")

    def _index_distance(self, column: str) -> Distance | None:
        rows = self._query("read indexes", "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s",
                           [self._oid])
        pattern = re.compile(rf'\(\s*"?{re.escape(column)}"?\s+(vector_\w+_ops)')
        for (definition,) in rows:
            match = pattern.search(definition)
            if match:
                return parse_distance(match.group(1))
        return None

    def describe(self) -> CollectionInfo:
        if self._info is not None:
            return self._info
        from psycopg import sql

        self._qualified = self._resolve_table()
        self._load_columns()
        self.vector = self._pick_vector_column()
        self.id_column = self._pick_id_column()
        if self.payload_column is not None:
            if self.payload_column not in self._columns:
                raise ConfigError(f"no payload column {self.payload_column!r} in {self.where}",
                                  hint=f"columns: {', '.join(self._columns)}")
            if self._columns[self.payload_column] not in ("jsonb", "json"):
                raise ConfigError(f"payload column {self.payload_column!r} of {self.where} is "
                                  f"{self._formats[self.payload_column]}, not jsonb",
                                  hint="leave out &payload= to take the payload from the other columns")
        self._register_vector_type()
        dim = self._typmods[self.vector]
        if dim <= 0:  # a `vector` column declared without a dimension: the most common one, not the first row's
            row = self._query("read dimension", sql.SQL(
                "SELECT vector_dims({0}) AS d FROM {1} WHERE {0} IS NOT NULL GROUP BY d ORDER BY count(*) DESC, d DESC "
                "LIMIT 1").format(sql.Identifier(self.vector), self._qualified))
            dim = int(row[0][0]) if row else 0
        count = int(self._query("count", sql.SQL("SELECT count(*) FROM {}").format(self._qualified))[0][0])
        declared, indexed = distance_option(self.uri, self.options), self._index_distance(self.vector)
        distance = declared or indexed or Distance.COSINE
        source = "declared" if declared else "index" if indexed else "assumed"
        schema = {c: self._formats[c] for c in self._columns if c not in (self.vector, self.id_column)}
        self._info = CollectionInfo(
            name=self.collection or "", dim=dim, distance=distance, count=count, vector_name=self.vector,
            vector_names=tuple(c for c, t in self._columns.items() if t == "vector"), payload_schema=schema,
            extra={"id_column": self.id_column, "payload_column": self.payload_column, "distance_source": source},
        )
        return self._info

    def _register_vector_type(self) -> None:
        from pgvector.psycopg import register_vector

        call_backend("register vector type", self.where, register_vector, self.connection())

    def _select(self, table: Any = None, columns: Mapping[str, str] | None = None) -> Any:
        """SELECT id, vector, payload column(s) FROM the audited table, or ``table`` with its ``columns``."""
        from psycopg import sql

        assert self.vector is not None and self.id_column is not None
        if self.payload_column:
            payload_cols = [self.payload_column]
        else:
            payload_cols = [c for c in (columns or self._columns) if c not in (self.vector, self.id_column)]
        self._payload_names = payload_cols
        fields = [sql.Identifier(self.id_column), sql.Identifier(self.vector), *map(sql.Identifier, payload_cols)]
        return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(fields),
                                                   self._qualified if table is None else table)

    def _point(self, row: Sequence[Any]) -> tuple[PointId, Any, dict[str, Any]]:
        pid = row[0] if isinstance(row[0], (int, str)) else str(row[0])
        if self.payload_column:
            raw = row[2]
            payload = dict(raw) if isinstance(raw, Mapping) else ({} if raw is None else {"_raw": raw})
        else:
            payload = dict(zip(self._payload_names, row[2:], strict=True))
        vec = row[1]
        # pgvector-python returns its own Vector type; its numpy view is the float32 data as stored.
        return pid, (vec.to_numpy() if hasattr(vec, "to_numpy") else vec), payload

    # -- reading ------------------------------------------------------------------------------------
    def iter_batches(self, *, batch_size: int = 512, start: Cursor = None) -> Iterator[tuple[PointBatch, Cursor]]:
        return self._keyset_pages(batch_size, start)

    def _keyset_pages(self, batch_size: int, start: Cursor, upto: Any = None) -> Iterator[tuple[PointBatch, Cursor]]:
        """Keyset pages ``id > last [AND id <= upto] ORDER BY id``; the cursor is the last id, None at the end."""
        from psycopg import sql

        self.describe()
        base = self._select()
        ident = sql.Identifier(str(self.id_column))
        last = start
        while True:
            conditions, params = [], []
            for op, value in ((">", last), ("<=", upto)):
                if value is not None:
                    conditions.append(sql.SQL("{} " + op + " %s").format(ident))
                    params.append(value)
            where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
            stmt = sql.SQL("{}{} ORDER BY {} LIMIT %s").format(base, where, ident)
            rows = self._query("read page", stmt, [*params, batch_size + 1])
            if not rows:
                return
            # One row more than the page tells whether another page follows (the cursor is None on the last).
            done = len(rows) <= batch_size
            rows = rows[:batch_size]
            batch = PointBatch(ids=[], vectors=[], payloads=[])
            for row in rows:
                pid, vec, payload = self._point(row)
                batch.ids.append(pid)
                batch.vectors.append(vec)
                batch.payloads.append(payload)
            last = batch.ids[-1]
            yield batch, (None if done else last)
            if done:
                return

    # -- partitions -----------------------------------------------------------------------------------
    def partitions(self, *, target_points: int = DEFAULT_TARGET_POINTS) -> PartitionPlan:
        """Primary-key ranges ``(after, upto]`` from an id-only keyset listing (only the ids travel)."""
        from psycopg import sql

        self.describe()
        ident = sql.Identifier(str(self.id_column))

        def keys(after: Any, n: int) -> list[Any]:
            where = sql.SQL(" WHERE {} > %s").format(ident) if after is not None else sql.SQL("")
            stmt = sql.SQL("SELECT {} FROM {}{} ORDER BY {} LIMIT %s").format(ident, self._qualified, where, ident)
            rows = self._query("list ids", stmt, [*([after] if after is not None else []), n])
            return [row[0] if isinstance(row[0], (int, str)) else str(row[0]) for row in rows]

        return key_range_plan(keyset_boundaries(keys, target_points), str(self.id_column))

    def iter_partition(
        self, partition: Partition, *, batch_size: int = 512, start: Cursor = None
    ) -> Iterator[tuple[PointBatch, Cursor]]:
        return key_range_pages(partition, start, lambda: self.iter_batches(batch_size=batch_size, start=start),
                               lambda after, upto: self._keyset_pages(batch_size, after, upto))

    def fetch(self, ids: Sequence[PointId]) -> list[StoredPoint]:
        return self.fetch_points(ids)

    # -- writing (quarantine) ------------------------------------------------------------------------
    def _table(self, collection: str | None) -> tuple[Any, dict[str, str]]:
        """SQL identifier and ``{column: type name}`` of the audited table (``collection`` None or its name) or of
        a sibling table (the quarantine table: the audited columns plus any flag column vecaudit added)."""
        from psycopg import sql

        self.describe()
        if collection is None or collection == self.collection:
            return self._qualified, self._columns
        table = sql.Identifier(*collection.split(".", 1))
        rows = self._query("read columns",
                           "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                           "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
                           "ORDER BY a.attnum", [table.as_string(self.connection())])
        return table, {name: typname for name, typname in rows}

    def _is_audited(self, collection: str | None) -> bool:
        return collection is None or collection == self.collection

    def _id_match(self) -> Any:
        from psycopg import sql

        return sql.SQL("{}::text = ANY(%s)").format(sql.Identifier(str(self.id_column)))

    def _write(self, operation: str, statements: Sequence[tuple[Any, Sequence[Any]]]) -> None:
        """Run write statements in one transaction, the only READ WRITE one of this otherwise read-only session."""
        conn = self.connection()

        def run() -> None:
            with conn.transaction():
                conn.execute("SET TRANSACTION READ WRITE")
                for statement, params in statements:
                    conn.execute(statement, params)

        call_backend(operation, self.where, run)

    def fetch_points(self, ids: Sequence[PointId], *, collection: str | None = None) -> list[StoredPoint]:
        from psycopg import sql

        table, columns = self._table(collection)
        if not ids:
            return []
        stmt = sql.SQL("{} WHERE {}").format(self._select(table, columns), self._id_match())
        rows = self._query("fetch", stmt, [[str(i) for i in ids]])
        out = []
        for row in rows:
            pid, vec, payload = self._point(row)
            vectors = {str(self.vector): [] if vec is None else np.asarray(vec, dtype=np.float32).tolist()}
            out.append(StoredPoint(id=pid, vectors=vectors, payload=payload))
        return out

    def _payload_column_for_tag(self) -> str:
        if self.payload_column:
            return self.payload_column
        json_columns = [c for c, t in self._columns.items() if t in ("jsonb", "json")]
        raise ConnectorError(
            f"{self.where} has no JSONB payload column to hold a quarantine flag, so tag mode is unsupported",
            hint=(f"name its JSONB column with &payload={json_columns[0]}" if json_columns
                  else "use --mode move (the point goes to a sibling table)"),
        )

    def set_payload(self, ids: Sequence[PointId], payload: Mapping[str, Any], *, collection: str | None = None) -> None:
        from psycopg import sql
        from psycopg.types.json import Jsonb

        table, _ = self._table(collection)
        column = sql.Identifier(self._payload_column_for_tag())
        stmt = sql.SQL("UPDATE {} SET {} = (coalesce({}::jsonb, '{{}}'::jsonb) || %s)::{} WHERE {}").format(
            table, column, column, sql.SQL(self._formats[str(self.payload_column)]), self._id_match())
        self._write("set payload", [(stmt, [Jsonb(dict(payload)), [str(i) for i in ids]])])

    def overwrite_payload(
        self, ids: Sequence[PointId], payload: Mapping[str, Any], *, collection: str | None = None
    ) -> None:
        from psycopg import sql
        from psycopg.types.json import Jsonb

        table, _ = self._table(collection)
        column = sql.Identifier(self._payload_column_for_tag())
        stmt = sql.SQL("UPDATE {} SET {} = %s::{} WHERE {}").format(
            table, column, sql.SQL(self._formats[str(self.payload_column)]), self._id_match())
        self._write("overwrite payload", [(stmt, [Jsonb(dict(payload)), [str(i) for i in ids]])])

    def _row_values(self, point: StoredPoint, columns: Mapping[str, str]) -> tuple[list[str], list[Any]]:
        """Column names and values of a point: id, vector, then the JSONB payload column or one column per key."""
        from psycopg.types.json import Jsonb

        vector = point.vectors.get(str(self.vector), point.vectors.get(""))
        if vector is None:
            raise ConnectorError(f"point {point.id} has no vector {self.vector!r}")
        names = [str(self.id_column), str(self.vector)]
        values: list[Any] = [point.id, np.asarray(vector, dtype=np.float32)]
        if self.payload_column:
            return [*names, self.payload_column], [*values, Jsonb(dict(point.payload))]
        for key, value in point.payload.items():
            names.append(key)
            values.append(Jsonb(value) if columns[key] in ("jsonb", "json") and value is not None else value)
        return names, values

    def upsert_points(self, points: Sequence[StoredPoint], *, collection: str | None = None) -> None:
        """Delete then insert each point in one transaction (needs no unique constraint on the id column). A
        payload key without a column (the flag of a moved point) becomes a JSONB column of the quarantine table;
        the audited table's schema is never changed."""
        from psycopg import sql

        table, columns = self._table(collection)
        statements: list[tuple[Any, Sequence[Any]]] = []
        if not self.payload_column:
            keys = {k for p in points for k in p.payload}
            unknown = sorted(keys - set(columns) | keys & {str(self.id_column), str(self.vector)})
            if unknown and self._is_audited(collection):
                raise ConnectorError(f"payload key(s) {', '.join(unknown)} are not payload columns of {self.where}",
                                     hint="vecaudit never changes the schema of an audited table")
            for key in unknown:
                statements.append((sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} jsonb").format(
                    table, sql.Identifier(key)), []))
                columns = {**columns, key: "jsonb"}
        for point in points:
            names, values = self._row_values(point, columns)
            statements.append((sql.SQL("DELETE FROM {} WHERE {}").format(table, self._id_match()), [[str(point.id)]]))
            statements.append((sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                table, sql.SQL(", ").join(map(sql.Identifier, names)),
                sql.SQL(", ").join([sql.Placeholder()] * len(values))), values))
        if points:
            self._write("upsert", statements)

    def delete_points(self, ids: Sequence[PointId], *, collection: str | None = None) -> None:
        from psycopg import sql

        if ids:
            stmt = sql.SQL("DELETE FROM {} WHERE {}").format(self._table(collection)[0], self._id_match())
            self._write("delete", [(stmt, [[str(i) for i in ids]])])

    def collection_exists(self, name: str) -> bool:
        from psycopg import sql

        text = sql.Identifier(*name.split(".", 1)).as_string(self.connection())
        return self._query("find table", "SELECT to_regclass(%s)::oid", [text])[0][0] is not None

    def ensure_collection_like(self, name: str) -> None:
        """``CREATE TABLE name (LIKE source INCLUDING ALL)``: same columns, defaults, constraints and indexes.
        Row-level security policies and grants are not copied: only the quarantining role reads the copy."""
        from psycopg import sql

        self.describe()
        if self.payload_column:
            outside = [c for c in self._columns if c not in (self.id_column, self.vector, self.payload_column)]
            if outside:
                raise ConnectorError(
                    f"move mode would lose column(s) {', '.join(outside)} of {self.where}: they are outside the "
                    f"audited point (payload column {self.payload_column!r})",
                    hint="use --mode tag, or audit without &payload= so every column is part of the point",
                )
        if self.collection_exists(name):
            return
        stmt = sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING ALL)").format(
            sql.Identifier(*name.split(".", 1)), self._qualified)
        self._write("create quarantine table", [(stmt, [])])

    # -- isolation probes and posture ---------------------------------------------------------------
    def _tenant_expression(self, tenant_field: str) -> Any:
        """The SQL for a tenant field: a column, or a key of the JSONB payload column."""
        from psycopg import sql

        if tenant_field in self._columns:
            return sql.SQL("{}::text").format(sql.Identifier(tenant_field))
        if self.payload_column:
            return sql.SQL("{} ->> {}").format(sql.Identifier(self.payload_column), sql.Literal(tenant_field))
        raise ConfigError(f"no tenant column {tenant_field!r} in {self.where}",
                          hint=f"columns: {', '.join(self._columns)}")

    def probe_search(
        self, vector: np.ndarray, *, tenant_field: str, tenant: str, limit: int = 10,
        filter_spec: Mapping[str, Any] | None = None,
    ) -> list[ProbeHit]:
        """The SQL idiom of a RAG app: ``WHERE tenant = %s ORDER BY vec <=> %s LIMIT k``."""
        from psycopg import sql

        info = self.describe()
        if filter_spec is not None:
            raise ConfigError("pgvector probes take the tenant field only, not a filter_spec")
        op = sql.SQL(_OPERATORS[info.distance])
        query = np.asarray(vector, dtype=np.float32)
        stmt = sql.SQL("{} WHERE {} = %s ORDER BY {} {} %s LIMIT %s").format(
            self._select(), self._tenant_expression(tenant_field), sql.Identifier(str(self.vector)), op,
        )
        rows = self._query("probe search", stmt, [tenant, query, limit])
        hits = []
        for row in rows:
            pid, vec, payload = self._point(row)
            hits.append(ProbeHit(id=pid, score=_similarity(query, np.asarray(vec, dtype=np.float32), info.distance),
                                 payload=payload))
        return hits

    def posture(self, *, tenant_field: str | None) -> dict[str, Any]:
        """Row-level security of the table, its policies, whether the reading role bypasses them, and whether
        the tenant column is indexed."""
        self.describe()
        rls = self._query("read row-level security",
                          "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s", [self._oid])[0]
        policies = self._query("read policies", "SELECT polname FROM pg_policy WHERE polrelid = %s ORDER BY 1",
                               [self._oid])
        role = self._query("read role", "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles "
                                        "WHERE rolname = current_user")[0]
        facts: dict[str, Any] = {
            "mode": "server", "row_level_security": bool(rls[0]), "row_level_security_forced": bool(rls[1]),
            "policies": [p[0] for p in policies], "reader_role": role[0],
            "reader_bypasses_rls": bool(role[1] or role[2]),
        }
        if tenant_field:
            defs = self._query("read indexes", "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s",
                               [self._oid])
            pattern = re.compile(rf'\(\s*"?{re.escape(tenant_field)}"?[\s,)]')
            facts["tenant_index"] = any(pattern.search(d) for (d,) in defs)
        return facts


def _similarity(query: np.ndarray, vec: np.ndarray, distance: Distance) -> float:
    """Similarity between two vectors in the collection's metric; higher = closer."""
    if distance is Distance.COSINE:
        denom = float(np.linalg.norm(query) * np.linalg.norm(vec)) or 1.0
        return float(np.dot(query, vec)) / denom
    if distance is Distance.DOT:
        return float(np.dot(query, vec))
    if distance is Distance.MANHATTAN:
        return -float(np.abs(query - vec).sum())
    return -float(np.linalg.norm(query - vec))


def _username(raw: str) -> str | None:
    from urllib.parse import unquote, urlsplit

    user = urlsplit(raw).username
    return unquote(user) if user else None
