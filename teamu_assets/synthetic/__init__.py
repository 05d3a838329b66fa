"""Deterministic Teamu-shaped data with a known ground truth: app tables, Mixpanel exports, oracle scores.

Pure: no Dagster, no clock, no network. `teamu seed` calls generate, write_supabase, write_mixpanel_files and
save_truth."""

from teamu_assets.synthetic.config import SyntheticConfig
from teamu_assets.synthetic.generator import CONTRACT_COLUMNS, SyntheticDataset, checksums, generate
from teamu_assets.synthetic.mixpanel_files import BAD_KINDS, MixpanelFilesSummary, write_mixpanel_files
from teamu_assets.synthetic.supabase import write_supabase
from teamu_assets.synthetic.truth import GroundTruth, load_truth, save_truth

__all__ = [
    "BAD_KINDS",
    "CONTRACT_COLUMNS",
    "GroundTruth",
    "MixpanelFilesSummary",
    "SyntheticConfig",
    "SyntheticDataset",
    "checksums",
    "generate",
    "load_truth",
    "save_truth",
    "write_mixpanel_files",
    "write_supabase",
]
