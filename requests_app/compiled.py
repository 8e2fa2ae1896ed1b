"""Querysets compiled once and run again with other values.

A page that runs the same query for every visitor pays the ORM to build and compile it
each time, which on the hottest pages costs more CPU (0.3-0.5 ms a query) than PostgreSQL
takes to plan and run it. A CompiledQuery builds its queryset once per database
connection with stand-in values, keeps the SQL the ORM wrote, and runs that SQL with each
call's values in the stand-ins' places. Rows become model instances as the queryset
itself would make them (only(), select_related() and annotations included), so callers
get ordinary objects and the SQL stays the ORM's, on SQLite as on PostgreSQL.

Under statements_prepared(), PostgreSQL can also keep such a query prepared: the few
paths every visitor takes run there.
"""

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, Model, QuerySet
from django.db.models.query import get_related_populators
from django.db.models.sql.compiler import SQLCompiler


class CompiledQuery:
    """`build(**values)` returns the queryset; `stand_ins` gives each value's stand-in and
    the model field that prepares it for the database. A stand-in must be a value no real
    call passes and must reach the SQL as exactly one parameter."""

    def __init__(self, build: Callable[..., QuerySet], **stand_ins: tuple[Any, Field]):
        self.build = build
        self.stand_ins = stand_ins

    def rows(self, using: str = DEFAULT_DB_ALIAS, **values) -> list:
        """The rows, converted as the queryset itself converts them: for a values_list()
        queryset, what it would yield."""
        connection = connections[using]
        return _compiled(self, connection).rows(connection, values)

    def objects(self, using: str = DEFAULT_DB_ALIAS, **values) -> list[Model]:
        connection = connections[using]
        compiled = _compiled(self, connection)
        return compiled.instances(using, compiled.rows(connection, values))

    def first(self, using: str = DEFAULT_DB_ALIAS, **values) -> Model | None:
        found = self.objects(using, **values)
        return found[0] if found else None


@dataclass(frozen=True)
class _Compiled:
    compiler: SQLCompiler
    sql: str
    params: tuple
    slots: tuple  # (position in params, name of the value, the field that prepares it)
    converters: dict

    def rows(self, connection, values) -> list:
        params = list(self.params)
        for position, name, field in self.slots:
            params[position] = field.get_db_prep_value(values[name], connection, prepared=False)
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if self.converters:
            rows = list(self.compiler.apply_converters(rows, self.converters))
        return rows

    def instances(self, using, rows) -> list[Model]:
        """What ModelIterable makes of the rows (django/db/models/query.py)."""
        compiler = self.compiler
        select, klass_info = compiler.select, compiler.klass_info
        model, fields = klass_info["model"], klass_info["select_fields"]
        start, end = fields[0], fields[-1] + 1
        init_list = [column[0].target.attname for column in select[start:end]]
        populators = get_related_populators(klass_info, select, using)
        annotations = compiler.annotation_col_map.items()
        found = []
        for row in rows:
            instance = model.from_db(using, init_list, row[start:end])
            for populator in populators:
                populator.populate(row, instance)
            for name, position in annotations:
                setattr(instance, name, row[position])
            found.append(instance)
        return found


@contextmanager
def statements_prepared(using: str = DEFAULT_DB_ALIAS):
    """Within the block, statements bind their values on the server (PostgreSQL), which
    lets psycopg prepare a statement once the connection has run it `prepare_threshold`
    times (OPTIONS in settings.DATABASES; None, for a pooler that cannot keep them, never
    prepares). A prepared statement skips PostgreSQL's parse and plan, which for the
    status page's query cost four times what running it does, and psycopg no longer
    quotes every value into the SQL text. Django's own cursors bind on the client, where
    nothing is prepared; this is for the few paths every visitor takes, whose SQL is
    plain enough that the server infers each parameter's type."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        yield
        return
    with connection.execute_wrapper(_bind_on_server):
        yield


def _bind_on_server(execute, sql, params, many, context):
    from django.db.backends.postgresql.base import ServerBindingCursor

    cursor = context["cursor"]
    if not isinstance(cursor.cursor, ServerBindingCursor):
        client_side = cursor.cursor
        cursor.cursor = ServerBindingCursor(client_side.connection)
        client_side.close()
    return execute(sql, params, many, context)


# Per connection: a connection belongs to one thread, and so does what is compiled for it.
@lru_cache(maxsize=256)
def _compiled(query: CompiledQuery, connection) -> _Compiled:
    queryset = query.build(**{name: value for name, (value, _field) in query.stand_ins.items()})
    compiler = queryset.query.get_compiler(connection=connection)
    sql, params = compiler.as_sql()
    slots = []
    for name, (stand_in, field) in query.stand_ins.items():
        prepared = field.get_db_prep_value(stand_in, connection, prepared=False)
        positions = [i for i, p in enumerate(params) if type(p) is type(prepared) and p == prepared]
        if len(positions) != 1:
            raise AssertionError(f"{name}: its stand-in is in {len(positions)} places of {sql}")
        slots.append((positions[0], name, field))
    return _Compiled(
        compiler=compiler,
        sql=sql,
        params=tuple(params),
        slots=tuple(slots),
        converters=compiler.get_converters([column for column, _sql, _alias in compiler.select]),
    )
