"""A RealDataset into a database and a landing folder, through the same writers as the synthetic data."""

from __future__ import annotations

from pathlib import Path

from teamu_assets.realdata.dataset import RealDataset
from teamu_assets.synthetic.mixpanel_files import write_mixpanel_files
from teamu_assets.synthetic.supabase import write_supabase


def write_real_dataset(url: str, dataset: RealDataset, landing_dir: Path | str) -> dict[str, int]:
    """Replace the raw_supabase tables with the dataset's (one transaction, tables created when missing) and
    write its views as Mixpanel export files (one JSON-lines file a UTC day) into landing_dir.

    The synthetic writers only read `tables`, `events` and `posts`, which RealDataset has too. Returns the
    committed row count of each raw table, plus "events" (lines written) and "files"."""
    counts = write_supabase(url, dataset)  # type: ignore[arg-type]
    files = write_mixpanel_files(dataset, Path(landing_dir))  # type: ignore[arg-type]
    return {**counts, "events": files.lines, "files": len(files.files)}
