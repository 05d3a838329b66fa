"""DDL of the schemas this project owns, kept as .sql files beside this module and applied idempotently."""

from __future__ import annotations

from pathlib import Path

from teamu_assets.db.connection import connect

SQL_DIR = Path(__file__).parent / "sql"


def available() -> list[str]:
    return sorted(path.stem for path in SQL_DIR.glob("*.sql"))


def apply(url: str, *names: str) -> None:
    """Run the named DDL files (e.g. 'raw_supabase') in one transaction; every file is idempotent."""
    with connect(url) as conn:
        for name in names:
            conn.execute((SQL_DIR / f"{name}.sql").read_text())
