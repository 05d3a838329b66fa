"""The dataset's app tables into raw_supabase, the way a Teamu deployment would hold them."""

from __future__ import annotations

import pandas as pd
from psycopg import sql

from teamu_assets.db import schema
from teamu_assets.db.connection import connect
from teamu_assets.synthetic.generator import CONTRACT_COLUMNS, SyntheticDataset

SCHEMA = "raw_supabase"


def write_supabase(url: str, dataset: SyntheticDataset) -> dict[str, int]:
    """Replace every raw_supabase table with the dataset's rows in one transaction (truncate, then COPY), so a
    rerun gives the same rows and a reader sees the old tables or the new ones, never half of them.
    Creates the tables when missing. Returns the row count of each table as committed."""
    schema.apply(url, SCHEMA)
    tables = [sql.Identifier(SCHEMA, name) for name in CONTRACT_COLUMNS]
    with connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(sql.SQL("truncate {}").format(sql.SQL(", ").join(tables)))
        for name, frame in dataset.tables.items():
            columns = list(CONTRACT_COLUMNS[name])
            statement = sql.SQL("copy {} ({}) from stdin").format(
                sql.Identifier(SCHEMA, name), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with cursor.copy(statement) as copy:
                for row in zip(*(_python_values(frame[column]) for column in columns), strict=True):
                    copy.write_row(row)
        counts = {}
        for name in CONTRACT_COLUMNS:
            query = sql.SQL("select count(*) from {}").format(sql.Identifier(SCHEMA, name))
            counts[name] = cursor.execute(query).fetchone()[0]
    return counts


def _python_values(column: pd.Series) -> list:
    """Plain Python values for psycopg: datetimes, ints, floats, str, lists, None for missing."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return list(column.dt.to_pydatetime())
    if column.dtype == object:
        return [value if isinstance(value, list) or pd.notna(value) else None for value in column]
    values = column.astype(object).where(column.notna(), None)
    return values.tolist()
