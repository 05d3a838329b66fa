"""Real public data sets (Stack Exchange site dumps, HetRec Last.fm 2K) through the raw data contract.

Pure: no Dagster, no TensorFlow. read_stackexchange / read_lastfm map the files onto the raw_supabase tables and
"Post Viewed" events (RealDataset); per_user_holdout cuts each user's last engaged posts off for evaluation;
write_real_dataset writes a dataset (usually the training part) where the product reads its raw data.
"""

from teamu_assets.realdata.dataset import RealDataset, per_user_holdout
from teamu_assets.realdata.lastfm import read_lastfm
from teamu_assets.realdata.stackexchange import read_stackexchange
from teamu_assets.realdata.writer import write_real_dataset

__all__ = ["RealDataset", "per_user_holdout", "read_lastfm", "read_stackexchange", "write_real_dataset"]
