"""Database triggers that make the request history append-only.

Code never updates or deletes history, but "never" must hold for a psql session, a
buggy migration or a compromised admin too, so the database refuses it. PostgreSQL
raises on UPDATE and DELETE; SQLite (the embedded default) aborts the same statements.
"""

TABLE = "requests_app_history"

POSTGRES_INSTALL = f"""
CREATE OR REPLACE FUNCTION civicdesk_history_is_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'request history is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS history_append_only ON {TABLE};
CREATE TRIGGER history_append_only BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION civicdesk_history_is_append_only();
"""
POSTGRES_UNINSTALL = f"""
DROP TRIGGER IF EXISTS history_append_only ON {TABLE};
DROP FUNCTION IF EXISTS civicdesk_history_is_append_only();
"""

SQLITE_INSTALL = [
    f"""CREATE TRIGGER IF NOT EXISTS history_no_update BEFORE UPDATE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'request history is append-only (UPDATE refused)'); END;""",
    f"""CREATE TRIGGER IF NOT EXISTS history_no_delete BEFORE DELETE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'request history is append-only (DELETE refused)'); END;""",
]
SQLITE_UNINSTALL = [
    "DROP TRIGGER IF EXISTS history_no_update;",
    "DROP TRIGGER IF EXISTS history_no_delete;",
]


def install(connection):
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(POSTGRES_INSTALL)
        elif connection.vendor == "sqlite":
            for statement in SQLITE_INSTALL:
                cursor.execute(statement)


def uninstall(connection):
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(POSTGRES_UNINSTALL)
        elif connection.vendor == "sqlite":
            for statement in SQLITE_UNINSTALL:
                cursor.execute(statement)
