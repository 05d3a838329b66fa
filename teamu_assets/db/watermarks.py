"""How far the raw inputs have come: the positions the new-interactions sensor keeps as its cursor."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from teamu_assets.db.connection import connect
from teamu_assets.ingest.loader import landed_files, pending_files

# Users' and posts' position: the newest updated_at up to now, and how many rows are stamped ahead of now. A row
# a client stamped hours ahead would otherwise be the max until then, and hide every edit made before that time;
# rows stamped ahead still count (a new one moves the count). Both parts read the updated_at indexes.
_TABLE_POSITION = """(
    coalesce((select max(updated_at) from raw_supabase.{table} where updated_at <= now())::text, '')
    || ' +' || (select count(*) from raw_supabase.{table} where updated_at > now())
)"""
SUPABASE_WATERMARKS_SQL = f"""
select (select coalesce(max(vote_id), 0) from raw_supabase.votes),
       (select coalesce(max(comment_id), 0) from raw_supabase.comments),
       {_TABLE_POSITION.format(table="users")},
       {_TABLE_POSITION.format(table="posts")}
"""


@dataclass(frozen=True)
class Watermarks:
    """Ids grow with new votes/comments; updated_at moves with new or edited users/posts (the newest up to now,
    with the count of rows stamped ahead of it, see _TABLE_POSITION); the export files the
    ledger doesn't reflect yet (new, or grown since they were loaded), with their sizes, so a file that grows
    again after a load is news again."""

    max_vote_id: int = 0
    max_comment_id: int = 0
    users_updated_at: str = ""
    posts_updated_at: str = ""
    pending_mixpanel_files: tuple[str, ...] = ()
    pending_mixpanel_sizes: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "pending_mixpanel_files": list(self.pending_mixpanel_files),
            "pending_mixpanel_sizes": list(self.pending_mixpanel_sizes),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> Watermarks:
        # A cursor stored before sizes were kept has none: its files then all count as news once.
        return cls(
            **{
                **raw,
                "pending_mixpanel_files": tuple(raw.get("pending_mixpanel_files", ())),
                "pending_mixpanel_sizes": tuple(raw.get("pending_mixpanel_sizes", ())),
            }
        )

    def _pending(self) -> set[tuple[str, int]]:
        return set(zip(self.pending_mixpanel_files, self.pending_mixpanel_sizes, strict=False))

    def moved_from(self, earlier: Watermarks) -> bool:
        """Any Supabase position changed, either way, or an export file arrived that was not pending before.
        A position that went back means the raw tables were rewritten (e.g. `make demo` reseeds them): the rows
        now there are what to watch, and comparing with "greater than" would ignore every new row until the
        old, higher position is passed again."""
        return (
            (self.max_vote_id, self.max_comment_id, self.users_updated_at, self.posts_updated_at)
            != (earlier.max_vote_id, earlier.max_comment_id, earlier.users_updated_at, earlier.posts_updated_at)
        ) or bool(self._pending() - earlier._pending())


def current_watermarks(url: str, landing_dir: Path) -> Watermarks:
    """Supabase positions, and the export files of the landing folder that the ingester has not loaded as they
    are now (by size and mtime, as the ingester itself picks them)."""
    with connect(url) as conn:
        votes, comments, users, posts = conn.execute(SUPABASE_WATERMARKS_SQL).fetchone()
    pending = pending_files(url, landed_files(landing_dir)[0]) if landing_dir.is_dir() else []
    names = tuple(landed.source_file for landed in pending)
    return Watermarks(votes, comments, users, posts, names, tuple(landed.size_bytes for landed in pending))


def interactions_since_last_training(url: str) -> tuple[int, str | None]:
    """Interactions loaded into the marts after the newest registered model was trained (all, if none was),
    and that model's version."""
    with connect(url) as conn:
        return conn.execute(
            "with last as (select model_version, trained_at from ml.model_versions order by trained_at desc limit 1) "
            "select (select count(*) from marts.interactions "
            "        where loaded_at > coalesce((select trained_at from last), '-infinity')), "
            "       (select model_version from last)"
        ).fetchone()
