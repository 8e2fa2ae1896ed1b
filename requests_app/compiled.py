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
from functools import cached_property, lru_cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, NotSupportedError, connections, transaction
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.db.models import Field, Model, QuerySet
from django.db.models.expressions import DatabaseDefault
from django.db.models.query import get_related_populators
from django.db.models.signals import post_save, pre_save
from django.db.models.sql import InsertQuery
from django.db.models.sql.compiler import SQLCompiler
from psycopg.pq import Format


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
        model, start, end, init_list, populators, annotations = self._instance_plan
        found = []
        for row in rows:
            instance = model.from_db(using, init_list, row[start:end])
            for populator in populators:
                populator.populate(row, instance)
            for name, position in annotations:
                setattr(instance, name, row[position])
            found.append(instance)
        return found

    @cached_property
    def _instance_plan(self):
        """Where each model's columns sit in a row: worked out once, like the SQL."""
        compiler = self.compiler
        select, klass_info = compiler.select, compiler.klass_info
        fields = klass_info["select_fields"]
        start, end = fields[0], fields[-1] + 1
        init_list = [column[0].target.attname for column in select[start:end]]
        populators = get_related_populators(klass_info, select, compiler.connection.alias)
        annotations = tuple(compiler.annotation_col_map.items())
        return klass_info["model"], start, end, init_list, populators, annotations


# --- Inserting new rows --------------------------------------------------------------------
# A submission inserts four rows, and the ORM composes and compiles each INSERT anew: for the
# request's forty columns that costs more CPU than PostgreSQL spends running it. insert_new()
# does what Model.save() does for a new row (related fields checked, signals, pre_save
# values, the columns the database returns) with the statement the ORM wrote for the model
# once per connection, as CompiledQuery does for queries: the SQL stays the ORM's.


def insert_new(instance: Model, using: str = DEFAULT_DB_ALIAS) -> Model:
    """INSERT a new, unsaved instance with an automatic primary key; returns it, saved.

    The model's own save() is not called: a model whose save() does more for a new row
    must do that first itself (ServiceRequest.insert() picks its tracking number).
    """
    model = type(instance)
    meta = model._meta
    if instance.pk is not None or meta.parents or meta.proxy:
        raise ValueError(f"insert_new() takes a new {model.__name__} with an automatic id")
    connection = connections[using]
    instance._prepare_related_fields_for_save(operation_name="save")
    pre_save.send(sender=model, instance=instance, raw=False, using=using, update_fields=None)
    values = [(field, field.pre_save(instance, True)) for field in _insertable_fields(model)]
    # A field left to its db_default is left out of the statement, as the database then
    # fills it in just as the ORM's DEFAULT would: one statement per such set of fields.
    defaulted = tuple(f.attname for f, value in values if isinstance(value, DatabaseDefault))
    statement = _per_connection(
        connection, (model, defaulted), lambda: _InsertStatement(model, connection, defaulted)
    )
    params = []
    for field, value in values:
        if field.attname in defaulted:
            continue
        if hasattr(value, "resolve_expression"):
            raise ValueError(f"insert_new(): {model.__name__}.{field.name} is an expression")
        params.append(field.get_db_prep_save(value, connection=connection))
    params.extend(statement.returning_params)
    with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
        cursor.execute(statement.sql, params)
        row = connection.ops.fetch_returned_insert_columns(cursor, statement.returning_params)
    if statement.converters:
        (row,) = statement.compiler.apply_converters([row], statement.converters)
    for value, field in zip(row, statement.returning_fields, strict=True):
        setattr(instance, field.attname, value)
    instance._state.adding = False
    instance._state.db = using
    post_save.send(
        sender=model, instance=instance, created=True, update_fields=None, raw=False, using=using
    )
    return instance


@lru_cache(maxsize=64)
def _insertable_fields(model) -> tuple:
    """The columns Model.save() writes for a new row with an automatic id."""
    meta = model._meta
    return tuple(
        f for f in meta.local_concrete_fields if not f.generated and f is not meta.auto_field
    )


class _InsertStatement:
    def __init__(self, model, connection, defaulted: tuple):
        if not connection.features.can_return_columns_from_insert:
            raise NotImplementedError("insert_new() needs INSERT … RETURNING")
        meta = model._meta
        fields = [f for f in _insertable_fields(model) if f.attname not in defaulted]
        # The values are not kept, only the statement: a stand-in row of NULLs, so that
        # each column is one parameter (checked below).
        stand_in = model()
        for field in fields:
            setattr(stand_in, field.attname, None)
        query = InsertQuery(model)
        query.insert_values(fields, [stand_in])
        self.returning_fields = meta.db_returning_fields
        self.compiler = query.get_compiler(connection=connection)
        self.compiler.returning_fields = self.returning_fields
        [(self.sql, params)] = self.compiler.as_sql()
        self.returning_params = tuple(self.compiler.returning_params)
        if len(params) != len(fields) + len(self.returning_params):
            raise AssertionError(f"insert_new(): a column of {model.__name__} is no parameter")
        self.converters = self.compiler.get_converters(
            [f.get_col(meta.db_table) for f in self.returning_fields]
        )


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
    cursor, connection = context["cursor"], context["connection"]
    if not isinstance(cursor.cursor, ServerBindingCursor):
        client_side = cursor.cursor
        cursor.cursor = ServerBindingCursor(client_side.connection)
        client_side.close()
        # As Django's own cursors do when the time zone was changed after connecting.
        if connection.timezone != _timestamptz_loader(client_side.connection).timezone:
            register_tzloader(connection.timezone, cursor.cursor)
    try:
        return execute(sql, params, many, context)
    except NotSupportedError as error:
        # "cached plan must not change result type": a migration changed a column that a
        # prepared statement returns. In a transaction, its rollback makes psycopg forget
        # the connection's prepared statements; outside one, forget them now and run the
        # statement again, so that the page does not fail until the connection is closed.
        if getattr(error.__cause__, "sqlstate", None) != "0A000" or connection.in_atomic_block:
            raise
        cursor.cursor.execute("DEALLOCATE ALL")  # psycopg clears its own record of them
        return execute(sql, params, many, context)


def _timestamptz_loader(raw_connection):
    return raw_connection.adapters.get_loader(
        raw_connection.adapters.types["timestamptz"].oid, Format.TEXT
    )


def _per_connection(connection, key, make):
    """What is compiled for a connection is kept on it, and goes with it: a connection
    belongs to one thread, and a thread's connection object is dropped with the thread."""
    compiled = connection.__dict__.setdefault("civicdesk_compiled", {})
    if key not in compiled:
        compiled[key] = make()
    return compiled[key]


def _compiled(query: CompiledQuery, connection) -> _Compiled:
    return _per_connection(connection, query, lambda: _compile(query, connection))


def _compile(query: CompiledQuery, connection) -> _Compiled:
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
