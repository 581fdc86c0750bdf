"""Statements compiled once by SQLAlchemy and run on a DB-API cursor: the hot path's writes
and reads, in a transaction `common.db.raw_writing` or `raw_reading` opens."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, bindparam


class Prepared:
    """A Core statement compiled once, for one engine, to run on a DB-API cursor: the hot path's
    writes skip SQLAlchemy's per-statement work (an execution context, the result object) and
    keep its SQL, its types' conversions (a time stamp as SQLite stores it) and its errors."""

    def __init__(self, engine: Engine, statement: Any, keys: Iterable[str] = ()) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        self.sql = str(compiled)
        self.names = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
        self.positional = compiled.positional
        self.processors = {name: processor for name, bind in compiled.binds.items()
                           if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect))}
        # The values written into the statement itself (`status == 'APPLIED'`), bound like the others.
        self.fixed = {name: bind.value for name, bind in compiled.binds.items()
                      if bind.value is not None and not bind.callable}
        # A query's columns as SQLAlchemy would read them (a time stamp from SQLite's text).
        columns = getattr(statement, "selected_columns", ())
        self.readers = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                        for column in columns]

    def parameters(self, values: Mapping[str, Any]) -> Any:
        given = {name: values[name] if name in values else self.fixed[name] for name in self.names}
        converted = {name: self.processors[name](value) if name in self.processors else value
                     for name, value in given.items()}
        return tuple(converted[name] for name in self.names) if self.positional else converted

    def row(self, raw: tuple[Any, ...]) -> tuple[Any, ...]:
        """A result row, its values converted as SQLAlchemy would."""
        return tuple(read(value) if read else value
                     for read, value in zip(self.readers, raw, strict=True))


class PreparedIn:
    """A `Prepared` statement with an IN list of any length (`build` makes the statement from
    the list's bind parameters): one statement compiled per power of two, the list padded by
    repeating its last value (which changes no statement's result), so that a few statements,
    each compiled once, serve every length (not one round trip per value on MySQL)."""

    def __init__(self, engine: Engine, build: Callable[[list[Any]], Any], keys: Iterable[str] = ()) -> None:
        self.engine = engine
        self.build = build
        self.keys = tuple(keys)
        self._sizes: dict[int, Prepared] = {}

    def bound(self, values: Sequence[Any]) -> tuple[Prepared, dict[str, Any]]:
        """The statement for this many values, and the values as its IN list's parameters."""
        if not values:
            raise ValueError("an IN list needs at least one value")
        size = 1 << (len(values) - 1).bit_length()
        prepared = self._sizes.get(size)
        if prepared is None:
            listed: list[Any] = [bindparam(f"in_{i}") for i in range(size)]
            prepared = self._sizes[size] = Prepared(self.engine, self.build(listed), self.keys)
        padded = [*values, *[values[-1]] * (size - len(values))]
        return prepared, {f"in_{i}": value for i, value in enumerate(padded)}


class Raw:
    """A transaction on the DB-API connection itself (see `raw_writing`)."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def execute(self, prepared: Prepared, values: Mapping[str, Any] | None = None) -> int:
        """Run the statement; the rows it changed."""
        self.cursor.execute(prepared.sql, prepared.parameters(values or {}))
        return int(self.cursor.rowcount)

    def execute_in(self, statement: PreparedIn, listed: Sequence[Any],
                   values: Mapping[str, Any] | None = None) -> int:
        """Run the statement with `listed` as its IN list; the rows it changed."""
        prepared, parameters = statement.bound(listed)
        return self.execute(prepared, {**(values or {}), **parameters})

    def all_in(self, statement: PreparedIn, listed: Sequence[Any],
               values: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Every row of the query with `listed` as its IN list."""
        prepared, parameters = statement.bound(listed)
        return self.all(prepared, {**(values or {}), **parameters})

    def execute_many(self, prepared: Prepared, rows: Iterable[Mapping[str, Any]]) -> int:
        """Run the statement once for each of `rows` (an INSERT's rows in one statement, on
        MySQL); the rows it changed in all."""
        self.cursor.executemany(prepared.sql, [prepared.parameters(values) for values in rows])
        return int(self.cursor.rowcount)

    def first(self, prepared: Prepared, values: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The query's first row, or None."""
        self.cursor.execute(prepared.sql, prepared.parameters(values or {}))
        row = self.cursor.fetchone()
        return None if row is None else prepared.row(tuple(row))

    def all(self, prepared: Prepared, values: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Every row of the query."""
        self.cursor.execute(prepared.sql, prepared.parameters(values or {}))
        return [prepared.row(tuple(row)) for row in self.cursor.fetchall()]
