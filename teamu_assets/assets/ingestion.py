"""Raw inputs: the Supabase app tables (read where they are) and the Mixpanel export, loaded into raw_mixpanel."""

from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    asset,
)

from teamu_assets.db import features
from teamu_assets.resources import MixpanelExport, TeamuDatabase

SUPABASE_TABLES = {
    "users": "Teamu profiles: passions, bio, location.",
    "projects": "Project titles a user created.",
    "project_members": "Each project's team: its members and their roles.",
    "posts": "Project-idea posts: title, description, local/global, location.",
    "comments": "Comments on posts (authoritative source of comment interactions).",
    "votes": "Up/down votes on posts (authoritative source of upvote interactions).",
}

# The app's own tables: Supabase writes them, the platform only reads them (dbt sources).
supabase_tables = [
    AssetSpec(
        key=AssetKey(["supabase", table]),
        description=description,
        group_name="raw_supabase",
        kinds={"postgres", "supabase"},
    )
    for table, description in SUPABASE_TABLES.items()
]


MIXPANEL_EVENTS = AssetKey(["mixpanel", "events"])
EXPORT_FILES_LOADED = "export_files_loaded"


@asset(
    key=MIXPANEL_EVENTS,
    group_name="raw_mixpanel",
    kinds={"python", "postgres"},
    description="Mixpanel raw export lines validated into raw_mixpanel.events; bad lines quarantined with a reason.",
    check_specs=[
        AssetCheckSpec(
            EXPORT_FILES_LOADED,
            asset=MIXPANEL_EVENTS,
            description="Every export file of the landing folder loaded as it is now: none failed (changed after "
            "it was loaded, unreadable), no entry refused (a symbolic link, not a regular file), the live export ran.",
        )
    ],
)
def mixpanel_events(
    context: AssetExecutionContext, database: TeamuDatabase, mixpanel: MixpanelExport
) -> MaterializeResult:
    from teamu_assets.ingest import ingest_landing_folder

    url = database.url()
    ingest = ingest_landing_folder(url, Path(mixpanel.landing_dir), mixpanel.credentials(), context.log)
    failed, refused = len(ingest.folder.failed), len(ingest.folder.refused)
    check_results = []
    if context.selected_asset_check_keys:
        check_results.append(
            AssetCheckResult(
                check_name=EXPORT_FILES_LOADED,
                passed=not ingest.problems,
                severity=AssetCheckSeverity.ERROR,
                description="; ".join(ingest.problems) or "every export file loaded",
                metadata={"failed": failed, "refused": refused},
            )
        )
    problems = "".join(f"- {message}\n" for message in ingest.problems)
    return MaterializeResult(
        metadata={
            # The table's rows after the load, as Dagster's catalog shows row counts.
            "dagster/row_count": features.table_row_count(url, "raw_mixpanel", "events"),
            "files_loaded": len(ingest.read),
            **ingest.totals,
            "reconciles": ingest.reconciles,
            "files_failed": failed,
            "entries_refused": refused,
            "files": MetadataValue.md(ingest.files_markdown()),
            **({"problems": MetadataValue.md(problems)} if problems else {}),
        },
        check_results=check_results,
    )
