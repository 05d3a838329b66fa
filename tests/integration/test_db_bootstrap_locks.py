"""`teamu db start`'s DDL under a lock timeout: a lock another session holds on something the bootstrap alters (an
analyst's open transaction, a refresh) makes the bootstrap fail fast with an error that says what it was doing,
instead of waiting as long as that session stays open while every query on the object queues behind it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from teamu_assets.db import bootstrap
from teamu_assets.db.connection import DDL_LOCK_TIMEOUT, DatabaseError, connect, scratch_database

pytestmark = pytest.mark.integration

# Without the lock timeout the bootstrap would wait for the holder, which never commits: the server ends the
# holder's session after this long instead, the bootstrap then succeeds, and the test fails rather than hangs.
HANG_GUARD = "300s"

# (what the bootstrap step says in its error, a statement whose lock that step has to wait for)
HOLDERS = {
    # An analyst's open transaction that read a raw table: `alter table ... add column if not exists` in
    # raw_mixpanel.sql needs the table's ACCESS EXCLUSIVE lock even when the column is there.
    "schemas": ("applying supabase_shim, raw_supabase", "select count(*) from raw_mixpanel.loaded_files"),
    # Another session changing the API function in an open transaction: the migration's COMMENT ON waits for it.
    "migrations": (
        "applying the Supabase migrations",
        "comment on function public.recommend_posts(integer) is 'being edited'",
    ),
    # A session that locked the serving functions' install record: their reinstall writes that row.
    "serving functions": ("installing the serving functions", "lock table ml.installed_sql in share mode"),
}


@pytest.fixture(scope="module")
def prepared(server_url: str) -> Iterator[str]:
    with scratch_database(server_url, "teamu_test_locks") as url:
        bootstrap.prepare_app_database(url)
        yield url


@pytest.mark.parametrize("step", list(HOLDERS))
def test_a_held_lock_makes_the_bootstrap_fail_fast_and_change_nothing(prepared: str, step: str) -> None:
    what, statement = HOLDERS[step]
    with connect(prepared) as holder:
        holder.execute(f"set idle_in_transaction_session_timeout = '{HANG_GUARD}'")
        holder.execute(statement)  # the transaction stays open: its lock is held until it ends
        with pytest.raises(DatabaseError) as error:
            bootstrap.prepare_app_database(prepared)
        # The holder was neither waited for nor disturbed: its transaction is still open.
        assert holder.execute("select 1").fetchone() == (1,)
        holder.rollback()
    message = str(error.value)
    assert what in message
    assert f"waiting {DDL_LOCK_TIMEOUT} (lock_timeout)" in message
    assert "idle in transaction" in message
    # Once the lock is gone the same bootstrap goes through.
    bootstrap.prepare_app_database(prepared)


def test_bootstraps_of_one_database_run_one_at_a_time(prepared: str) -> None:
    """Two bootstraps at once rewrote the same grants together and one failed ("tuple concurrently updated"):
    now the second waits for the first, and both succeed."""
    errors: list[BaseException] = []

    def bootstrap_twice() -> None:
        try:
            for _ in range(2):
                bootstrap.prepare_app_database(prepared)
        except BaseException as error:  # noqa: BLE001 - any failure is what the test reports
            errors.append(error)

    threads = [threading.Thread(target=bootstrap_twice) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_bootstrap_waits_while_another_holds_the_database(prepared: str) -> None:
    with connect(prepared, autocommit=True) as other:
        other.execute("select pg_advisory_lock(hashtext('teamu.prepare_app_database'))")
        done = threading.Event()
        waiting = threading.Thread(target=lambda: (bootstrap.prepare_app_database(prepared), done.set()))
        waiting.start()
        assert not done.wait(2.0)  # the other bootstrap still runs
        other.execute("select pg_advisory_unlock(hashtext('teamu.prepare_app_database'))")
        waiting.join(timeout=120)
    assert done.is_set()
