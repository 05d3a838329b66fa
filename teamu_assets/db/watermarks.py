"""How far the raw inputs have come: the positions the new-interactions sensor keeps as its cursor."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from teamu_assets.db.connection import connect

SUPABASE_WATERMARKS_SQL = """
select (select coalesce(max(vote_id), 0) from raw_supabase.votes),
       (select coalesce(max(comment_id), 0) from raw_supabase.comments),
       (select coalesce(max(updated_at)::text, '') from raw_supabase.users),
       (select coalesce(max(updated_at)::text, '') from raw_supabase.posts)
"""


@dataclass(frozen=True)
class Watermarks:
    """Ids grow with new votes/comments; updated_at moves with new or edited users/posts; the newest export
    file name moves with new Mixpanel files (export files are named by date, so names sort by time)."""

    max_vote_id: int = 0
    max_comment_id: int = 0
    users_updated_at: str = ""
    posts_updated_at: str = ""
    pending_mixpanel_files: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "pending_mixpanel_files": list(self.pending_mixpanel_files)}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> Watermarks:
        return cls(**{**raw, "pending_mixpanel_files": tuple(raw.get("pending_mixpanel_files", ()))})

    def moved_from(self, earlier: Watermarks) -> bool:
        """Any Supabase position changed, either way, or an export file arrived that was not pending before.
        A position that went back means the raw tables were rewritten (e.g. `make demo` reseeds them): the rows
        now there are what to watch, and comparing with "greater than" would ignore every new row until the
        old, higher position is passed again."""
        return (
            (self.max_vote_id, self.max_comment_id, self.users_updated_at, self.posts_updated_at)
            != (earlier.max_vote_id, earlier.max_comment_id, earlier.users_updated_at, earlier.posts_updated_at)
        ) or bool(set(self.pending_mixpanel_files) - set(earlier.pending_mixpanel_files))


def current_watermarks(url: str, landing_dir: Path) -> Watermarks:
    """Supabase positions, and the export files in the landing folder that the ingester has not loaded yet."""
    with connect(url) as conn:
        votes, comments, users, posts = conn.execute(SUPABASE_WATERMARKS_SQL).fetchone()
        loaded = {row[0] for row in conn.execute("select source_file from raw_mixpanel.loaded_files")}
    present = sorted(path.name for path in landing_dir.glob("*.jsonl")) if landing_dir.is_dir() else []
    return Watermarks(votes, comments, users, posts, tuple(name for name in present if name not in loaded))


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
