"""What the API roles can reach: anon nothing, authenticated only public.recommend_posts; no platform table, no
way to change what the SECURITY DEFINER functions see by name, every function with a fixed search_path, and
row-level security on anything a client role can touch."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from teamu_assets.db.connection import connect, database_of, scratch_database
from teamu_assets.instance import write_dagster_yaml
from tests.security.world import API_ROLES, OTHER_USER, PLATFORM_TABLES, SIGNED_IN, ApiWorld, acting_as, signed_in

pytestmark = pytest.mark.integration

PLATFORM_SCHEMAS = ("ml", "marts", "staging", "intermediate", "raw_supabase", "raw_mixpanel")
# Functions of schemas public and ml that an extension (pgvector, locally in public) doesn't own.
OWN_FUNCTIONS_SQL = """
select n.nspname || '.' || p.proname || '(' || oidvectortypes(p.proargtypes) || ')' as name,
       p.prosecdef, coalesce(p.proconfig, '{}') as config, p.oid
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
where n.nspname in ('public', 'ml')
  and not exists (
      select 1 from pg_depend d
      where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e'
  )
order by 1
"""
# Tables, views and the like that a role has any privilege on (directly, through PUBLIC or on a column), and
# whether row-level security guards them (only tables can have it; a view is always unguarded).
REACHABLE_RELATIONS_SQL = """
select c.oid::regclass::text, c.relkind in ('r', 'p') and c.relrowsecurity as guarded
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
where n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname !~ '^pg_(toast|temp)'
  and c.relkind in ('r', 'p', 'v', 'm', 'f')
  and (
      has_table_privilege(%(role)s, c.oid, 'select, insert, update, delete, truncate, references, trigger')
      or has_any_column_privilege(%(role)s, c.oid, 'select, insert, update, references')
  )
order by 1
"""


def reachable_relations(conn: psycopg.Connection, role: str) -> list[tuple[str, bool]]:
    return conn.execute(REACHABLE_RELATIONS_SQL, {"role": role}).fetchall()


def test_anon_can_execute_nothing_and_read_nothing(api: ApiWorld) -> None:
    with connect(api.url) as conn:
        functions = conn.execute(OWN_FUNCTIONS_SQL).fetchall()
        executable = [
            name
            for name, _, _, oid in functions
            if conn.execute("select has_function_privilege('anon', %s, 'execute')", (oid,)).fetchone()[0]
        ]
        usable_schemas = [
            schema
            for schema in PLATFORM_SCHEMAS
            if conn.execute("select has_schema_privilege('anon', %s, 'usage')", (schema,)).fetchone()[0]
        ]
        relations = reachable_relations(conn, "anon")
    assert {"public.recommend_posts(integer)", "ml.recommend_posts(bigint, integer, double precision)"} <= {
        name for name, *_ in functions
    }
    assert executable == []
    assert usable_schemas == []
    assert relations == []
    for call in (
        "select * from public.recommend_posts()",
        f"select * from public.recommend_posts_for_user({OTHER_USER})",
        f"select * from ml.recommend_posts({OTHER_USER})",
    ):
        with acting_as(api.url, "anon") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(call)


def test_authenticated_may_execute_recommend_posts_and_nothing_else(api: ApiWorld) -> None:
    with connect(api.url) as conn:
        executable = [
            name
            for name, _, _, oid in conn.execute(OWN_FUNCTIONS_SQL).fetchall()
            if conn.execute("select has_function_privilege('authenticated', %s, 'execute')", (oid,)).fetchone()[0]
        ]
        usable_schemas = [
            schema
            for schema in PLATFORM_SCHEMAS
            if conn.execute("select has_schema_privilege('authenticated', %s, 'usage')", (schema,)).fetchone()[0]
        ]
        relations = reachable_relations(conn, "authenticated")
    assert executable == ["public.recommend_posts(integer)"]
    assert usable_schemas == []
    assert relations == []


@pytest.mark.parametrize("role", API_ROLES)
@pytest.mark.parametrize("table", PLATFORM_TABLES)
def test_no_platform_table_is_readable(api: ApiWorld, role: str, table: str) -> None:
    with acting_as(api.url, role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"select count(*) from {table}")


def test_another_users_interactions_stay_hidden(api: ApiWorld) -> None:
    with signed_in(api.url, str(OTHER_USER)) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select count(*) from marts.interactions where user_id = %s", (OTHER_USER,))


def test_dagster_tables_are_out_of_reach(api: ApiWorld, server_url: str, tmp_path: Path) -> None:
    """Dagster keeps its runs and event logs in a database of its own (`dagster`, beside the app's), where the
    API roles (created by the `api` fixture's shim) have no privilege."""
    from dagster import DagsterInstance

    with scratch_database(server_url, "teamu_test_dagster") as url:
        write_dagster_yaml(tmp_path, url, database=database_of(url))
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            assert instance.get_runs() == []
        with connect(url) as conn:
            tables = {name for (name,) in conn.execute("select tablename from pg_tables where schemaname = 'public'")}
            assert {"runs", "event_logs"} <= tables
            assert [reachable_relations(conn, role) for role in API_ROLES] == [[], []]
        for role in API_ROLES:
            for table in ("runs", "event_logs"):
                with acting_as(url, role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f"select count(*) from public.{table}")


def test_every_function_has_a_fixed_search_path(api: ApiWorld) -> None:
    with connect(api.url) as conn:
        functions = conn.execute(OWN_FUNCTIONS_SQL).fetchall()
    mutable = [name for name, _, config, _ in functions if not any(c.startswith("search_path=") for c in config)]
    definers = {name: config for name, definer, config, _ in functions if definer}
    assert mutable == []
    # The API is exactly the two definer functions, each with an empty search_path (every name qualified).
    assert definers == {
        "public.recommend_posts(integer)": ['search_path=""'],
        "public.recommend_posts_for_user(bigint, integer)": ['search_path=""'],
    }


@pytest.mark.parametrize("role", API_ROLES)
def test_the_api_roles_cannot_create_objects(api: ApiWorld, role: str) -> None:
    with connect(api.url) as conn:
        assert conn.execute("select has_schema_privilege(%s, 'public', 'create')", (role,)).fetchone() == (False,)
        assert conn.execute("select has_database_privilege(%s, current_database(), 'create')", (role,)).fetchone() == (
            False,
        )
    for ddl in (
        "create table public.interactions (user_id bigint, post_id bigint)",
        "create function public.haversine_km(float8, float8, float8, float8) returns float8 language sql return 0",
        "create schema ml_shadow",
    ):
        with acting_as(api.url, role) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(ddl)


def test_temporary_objects_named_like_the_apis_change_nothing(api: ApiWorld) -> None:
    """A client may create temporary tables, and an empty search_path searches pg_temp first for tables and
    types: a table named `text` or `jsonb` there becomes that type for unqualified names."""
    with signed_in(api.url, str(SIGNED_IN)) as conn:
        for name in ("text", "jsonb", "numeric", "vector", "interactions", "post_features", "user_embeddings"):
            conn.execute(f"create temporary table {name} (user_id bigint, post_id bigint, embedding text)")
        conn.execute("set local search_path = pg_temp, public")
        rows = conn.execute("select * from public.recommend_posts(10)").fetchall()
    assert [(p, pytest.approx(s)) for p, s in rows] == api.expected[SIGNED_IN]


def test_objects_in_public_named_like_the_apis_change_nothing(api: ApiWorld) -> None:
    """Should someone be able to create in public after all, look-alikes there stay unused by the API: a caller's
    search_path doesn't reach inside the SECURITY DEFINER functions."""
    with connect(api.url) as conn:
        try:
            conn.execute(
                "create table public.interactions (user_id bigint, post_id bigint);"
                "create table public.user_embeddings (user_id bigint, embedding vector);"
                f"create function public.request_user_id() returns bigint language sql return {OTHER_USER};"
                "create function public.recommend_posts(bigint, integer, double precision)"
                " returns table (post_id bigint, score real) language sql return (0, 0);"
                "create function public.current_setting(text, boolean) returns text language sql"
                f""" return '{{"sub": "{OTHER_USER}"}}';"""
                "grant execute on all functions in schema public to authenticated;"
            )
            conn.execute("select set_config('request.jwt.claims', %s, true)", (f'{{"sub": "{SIGNED_IN}"}}',))
            conn.execute("set local role authenticated")
            conn.execute("set local search_path = public, pg_catalog")
            rows = conn.execute("select * from public.recommend_posts(10)").fetchall()
        finally:
            conn.rollback()
    assert [(p, pytest.approx(s)) for p, s in rows] == api.expected[SIGNED_IN]


def test_row_level_security_guards_every_table_a_client_role_can_reach(api: ApiWorld) -> None:
    with connect(api.url) as conn:
        assert [r for role in API_ROLES for r in reachable_relations(conn, role) if not r[1]] == []
        try:
            # Supabase opens every new table in public to the API roles; only row-level security then guards it.
            conn.execute("create table public.app_notes (note_id bigint primary key, user_id bigint, body text)")
            unguarded = [r for role in API_ROLES for r in reachable_relations(conn, role) if not r[1]]
            conn.execute("alter table public.app_notes enable row level security")
            guarded = [r for role in API_ROLES for r in reachable_relations(conn, role)]
        finally:
            conn.rollback()
    assert unguarded == [("app_notes", False), ("app_notes", False)]
    assert guarded == [("app_notes", True), ("app_notes", True)]
