"""The app-facing API in public: a signed-in user gets their own recommendations and nobody else's, the service
role any user's; the user comes from the JWT's `sub`, which is checked, never interpolated."""

from __future__ import annotations

import psycopg
import pytest

from teamu_assets.db import schema
from teamu_assets.db.connection import connect
from tests.security.world import OTHER_USER, SIGNED_IN, ApiWorld, acting_as, signed_in

pytestmark = pytest.mark.integration


def test_a_signed_in_user_gets_their_own_recommendations(api: ApiWorld) -> None:
    assert api.expected[SIGNED_IN] != api.expected[OTHER_USER], "the two users' lists must differ for this test"
    for user in (SIGNED_IN, OTHER_USER):
        with signed_in(api.url, str(user)) as conn:
            rows = conn.execute("select * from public.recommend_posts(10)").fetchall()
            default_k = conn.execute("select count(*) from public.recommend_posts()").fetchone()
        assert [(p, pytest.approx(s)) for p, s in rows] == api.expected[user]
        assert default_k == (20,)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        # No parameter names a user: the old wrapper's signature is gone.
        (f"select * from public.recommend_posts({OTHER_USER}, 10)", psycopg.errors.UndefinedFunction),
        (f"select * from public.recommend_posts(p_user_id => {OTHER_USER})", psycopg.errors.UndefinedFunction),
        (f"select * from public.recommend_posts(user_id => {OTHER_USER})", psycopg.errors.UndefinedFunction),
        # The service variant and the platform's functions are not theirs to call.
        (f"select * from public.recommend_posts_for_user({OTHER_USER}, 10)", psycopg.errors.InsufficientPrivilege),
        (f"select * from ml.recommend_posts({OTHER_USER}, 10)", psycopg.errors.InsufficientPrivilege),
        (f"select * from ml.similar_posts({OTHER_USER})", psycopg.errors.InsufficientPrivilege),
    ],
)
def test_a_signed_in_user_cannot_ask_for_another_users(api: ApiWorld, call: str, error: type[Exception]) -> None:
    with signed_in(api.url, str(SIGNED_IN)) as conn, pytest.raises(error):
        conn.execute(call)


def test_the_service_role_gets_any_users_and_only_through_its_variant(api: ApiWorld) -> None:
    with acting_as(api.url, "service_role") as conn:
        rows = conn.execute("select * from public.recommend_posts_for_user(%s, 10)", (OTHER_USER,)).fetchall()
        named = conn.execute("select * from public.recommend_posts_for_user(user_id => %s)", (SIGNED_IN,)).fetchall()
    assert [(p, pytest.approx(s)) for p, s in rows] == api.expected[OTHER_USER]
    assert len(named) == 20
    with acting_as(api.url, "service_role") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select * from public.recommend_posts(10)")


@pytest.mark.parametrize(
    "sub",
    [
        "1; drop table marts.interactions",
        "' or 1=1 --",
        f"{SIGNED_IN} or 1=1",
        f"{OTHER_USER}'--",
        "",
        "abc",
        "0x2a",
        "-1",
        "+42",
        "042",
        " 42",
        "42\n",
        "4.2e1",
        "9223372036854775808",  # one past the largest bigint
        "99999999999999999999999",
        "6f1c1a3e-2b7d-4c1e-9f4a-0d6b7e8c9a01",  # a Supabase Auth user id: not a Teamu id
        True,
        [SIGNED_IN],
    ],
)
def test_a_sub_that_is_not_a_user_id_is_a_clear_error(api: ApiWorld, sub: object) -> None:
    with (
        signed_in(api.url, sub) as conn,
        pytest.raises(
            psycopg.errors.InvalidAuthorizationSpecification, match='the JWT "sub" .* is not a Teamu user id'
        ),
    ):
        conn.execute("select * from public.recommend_posts(10)")


def test_sql_in_the_sub_never_runs(api: ApiWorld) -> None:
    for sub in ("1; drop table marts.interactions", "1); drop table marts.interactions; --"):
        with signed_in(api.url, sub) as conn, pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
            conn.execute("select * from public.recommend_posts(10)")
    with connect(api.url) as conn:
        assert conn.execute("select count(*) from marts.interactions").fetchone() == (50,)


def test_the_largest_user_id_and_a_json_number_are_user_ids(api: ApiWorld) -> None:
    with signed_in(api.url, "9223372036854775807") as conn:
        assert len(conn.execute("select * from public.recommend_posts(5)").fetchall()) == 5  # popularity fallback
    with signed_in(api.url, SIGNED_IN) as conn:
        rows = conn.execute("select * from public.recommend_posts(10)").fetchall()
    assert [(p, pytest.approx(s)) for p, s in rows] == api.expected[SIGNED_IN]


@pytest.mark.parametrize("claims", [{"role": "authenticated"}, {"sub": None, "role": "authenticated"}])
def test_without_a_sub_there_is_no_user(api: ApiWorld, claims: dict[str, object]) -> None:
    with (
        acting_as(api.url, "authenticated", claims) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="no signed-in user"),
    ):
        conn.execute("select * from public.recommend_posts(10)")


@pytest.mark.parametrize(
    ("k", "error", "message"),
    [
        (0, psycopg.errors.InvalidParameterValue, "k must be between 1 and 1000, got 0"),
        (1001, psycopg.errors.InvalidParameterValue, "k must be between 1 and 1000, got 1001"),
        (None, psycopg.errors.InvalidParameterValue, "got null"),
        ("5; drop table marts.interactions", psycopg.errors.InvalidTextRepresentation, "type integer"),
        ("5 or 1=1", psycopg.errors.InvalidTextRepresentation, "type integer"),
        ("2147483648", psycopg.errors.NumericValueOutOfRange, "out of range"),
    ],
)
def test_k_is_checked(api: ApiWorld, k: object, error: type[Exception], message: str) -> None:
    with signed_in(api.url, str(SIGNED_IN)) as conn, pytest.raises(error, match=message):
        conn.execute("select * from public.recommend_posts(k => %s)", (k,))
    with acting_as(api.url, "service_role") as conn, pytest.raises(error, match=message):
        conn.execute("select * from public.recommend_posts_for_user(%s, %s)", (SIGNED_IN, k))


def test_the_shim_answers_as_supabase_auth_does(api: ApiWorld) -> None:
    supabase_auth_id = "6f1c1a3e-2b7d-4c1e-9f4a-0d6b7e8c9a01"
    with signed_in(api.url, supabase_auth_id) as conn:
        assert conn.execute("select auth.uid()::text, auth.role(), auth.jwt() ->> 'sub'").fetchone() == (
            supabase_auth_id,
            "authenticated",
            supabase_auth_id,
        )
    with signed_in(api.url, "42") as conn, pytest.raises(psycopg.errors.InvalidTextRepresentation, match="uuid"):
        conn.execute("select auth.uid()")  # as on Supabase: auth.uid() is a uuid
    with connect(api.url) as conn:
        roles = conn.execute(
            "select rolname, rolcanlogin, rolinherit, rolbypassrls from pg_roles"
            " where rolname in ('anon', 'authenticated', 'service_role') order by 1"
        ).fetchall()
    assert roles == [
        ("anon", False, False, False),
        ("authenticated", False, False, False),
        ("service_role", False, False, True),
    ]


def test_serving_functions_installed_before_this_migration_work_after_it(api: ApiWorld) -> None:
    """A deployment's ml.recommend_posts predates its fixed search_path until the pipeline reinstalls it; inside
    the API's empty search_path it couldn't find pgvector's type. The migration gives it the path."""
    with connect(api.url) as conn:
        try:
            conn.execute("alter function ml.recommend_posts(bigint, integer, double precision) reset search_path")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (f'{{"sub": "{SIGNED_IN}"}}',))
            with (
                pytest.raises(psycopg.errors.UndefinedObject, match='type "vector" does not exist'),
                conn.transaction(),  # a savepoint: the error and the role end with it
            ):
                conn.execute("set local role authenticated; select * from public.recommend_posts(10)")
            for migration in schema.migrations():
                conn.execute(migration.read_text())
            conn.execute("set local role authenticated")
            rows = conn.execute("select * from public.recommend_posts(10)").fetchall()
        finally:
            conn.rollback()
    assert [(p, pytest.approx(s)) for p, s in rows] == api.expected[SIGNED_IN]
