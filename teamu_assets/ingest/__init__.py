"""Mixpanel export -> raw_mixpanel.events: validation, deduplication, quarantine and the loaded-files ledger.

Pure Python (psycopg and mixpanel-utils); the Dagster assets in teamu_assets/assets call these functions.
"""

from teamu_assets.contract import TEAMU_EVENTS
from teamu_assets.ingest.export import LandingIngest, MixpanelExportError, export_live, ingest_landing_folder
from teamu_assets.ingest.loader import (
    EXPORT_FILE_PATTERN,
    FileProblem,
    FolderLoad,
    IngestError,
    LandedFile,
    LoadResult,
    file_sha256,
    landed_files,
    load_export_file,
    load_landing_folder,
    pending_files,
)
from teamu_assets.ingest.validation import InvalidLine, ValidEvent, decode_line, validate_line

__all__ = [
    "EXPORT_FILE_PATTERN",
    "TEAMU_EVENTS",
    "FileProblem",
    "FolderLoad",
    "IngestError",
    "InvalidLine",
    "LandedFile",
    "LandingIngest",
    "LoadResult",
    "MixpanelExportError",
    "ValidEvent",
    "decode_line",
    "export_live",
    "file_sha256",
    "ingest_landing_folder",
    "landed_files",
    "load_export_file",
    "load_landing_folder",
    "pending_files",
    "validate_line",
]
