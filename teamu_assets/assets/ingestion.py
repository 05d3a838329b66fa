"""Raw inputs: the Supabase app tables (read where they are) and the Mixpanel export, loaded into raw_mixpanel."""

import datetime as dt
from pathlib import Path

from dagster import AssetExecutionContext, AssetKey, AssetSpec, MaterializeResult, MetadataValue, asset

from teamu_assets.resources import MixpanelExport, TeamuDatabase

SUPABASE_TABLES = {
    "users": "Teamu profiles: passions, bio, location.",
    "projects": "Project titles a user created.",
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


@asset(
    key=AssetKey(["mixpanel", "events"]),
    group_name="raw_mixpanel",
    kinds={"python", "postgres"},
    description="Mixpanel raw export lines validated into raw_mixpanel.events; bad lines quarantined with a reason.",
)
def mixpanel_events(
    context: AssetExecutionContext, database: TeamuDatabase, mixpanel: MixpanelExport
) -> MaterializeResult:
    from teamu_assets.ingest import export_live, load_landing_folder

    landing = Path(mixpanel.landing_dir)
    landing.mkdir(parents=True, exist_ok=True)
    credentials = mixpanel.credentials()
    if credentials is not None:
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        target = landing / f"mixpanel-live-{yesterday.isoformat()}.jsonl"
        if not target.exists():
            export_live(credentials, yesterday, yesterday, target)
            context.log.info(f"exported {yesterday} from Mixpanel into {target.name}")
    results = [result for result in load_landing_folder(database.url(), landing) if not result.skipped]
    totals = {
        field: sum(getattr(result, field) for result in results)
        for field in ("lines_read", "loaded", "duplicates", "quarantined")
    }
    if totals["quarantined"]:
        context.log.warning(f"{totals['quarantined']} lines quarantined in raw_mixpanel.events_quarantine")
    return MaterializeResult(
        metadata={
            "files_loaded": len(results),
            **totals,
            "reconciles": totals["lines_read"] == totals["loaded"] + totals["duplicates"] + totals["quarantined"],
            "files": MetadataValue.md(
                "| file | read | loaded | duplicates | quarantined |\n|---|---|---|---|---|\n"
                + "".join(
                    f"| {r.source_file} | {r.lines_read} | {r.loaded} | {r.duplicates} | {r.quarantined} |\n"
                    for r in results
                )
            ),
        }
    )
