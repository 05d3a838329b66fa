"""DDL of the schemas this project owns, kept as .sql files beside this module and applied idempotently, and the
Supabase migrations (supabase/migrations), which `teamu db start` applies the same way."""

from __future__ import annotations

from pathlib import Path

from teamu_assets.db.connection import connect, ddl_transaction
from teamu_assets.settings import PROJECT_ROOT

SQL_DIR = Path(__file__).parent / "sql"
# Where the Supabase CLI looks for them (`supabase db push` from the repository root).
MIGRATIONS_DIR = PROJECT_ROOT / "supabase" / "migrations"


def available() -> list[str]:
    return sorted(path.stem for path in SQL_DIR.glob("*.sql"))


def apply(url: str, *names: str) -> None:
    """Run the named DDL files (e.g. 'raw_supabase') in one transaction; every file is idempotent. A lock held
    elsewhere fails it after DDL_LOCK_TIMEOUT instead of stalling every reader of the table behind it."""
    with ddl_transaction(url, f"applying {', '.join(names)}") as conn:
        for name in names:
            conn.execute((SQL_DIR / f"{name}.sql").read_text())


def ensure(url: str, name: str, relation: str) -> None:
    """Apply schema `name` when `relation` (e.g. 'ml.post_ideas') is missing: a database bootstrapped before the
    relation existed (`teamu db start` applies every schema)."""
    with connect(url) as conn:
        missing = conn.execute("select to_regclass(%s)", (relation,)).fetchone()[0] is None
    if missing:
        apply(url, name)


def migrations() -> list[Path]:
    """The Supabase migrations in the order the CLI applies them: by name, which starts with a timestamp."""
    return sorted(MIGRATIONS_DIR.glob("*.sql"))


def apply_migrations(url: str) -> None:
    """Run every Supabase migration in one transaction. They are idempotent, so this runs them all each time
    instead of recording which ran (the Supabase CLI records that on a real project)."""
    paths = migrations()
    if not paths:
        # Without them the app-facing API and its revokes would be silently missing.
        raise FileNotFoundError(f"no Supabase migrations under {MIGRATIONS_DIR}")
    with ddl_transaction(url, "applying the Supabase migrations") as conn:
        for path in paths:
            conn.execute(path.read_text())
