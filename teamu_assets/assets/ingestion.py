"""Raw inputs: the Supabase app tables (read where they are) and the Mixpanel export, loaded into raw_mixpanel."""

import datetime as dt
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
    from teamu_assets.ingest import MixpanelExportError, export_live, load_landing_folder

    landing = Path(mixpanel.landing_dir)
    landing.mkdir(parents=True, exist_ok=True)
    credentials = mixpanel.credentials()
    # Problems are reported at the end, through the check: one bad file (or a Mixpanel outage) must not keep
    # the other files, and everything downstream of them, from loading.
    problems: list[str] = []
    if credentials is not None:
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        target = landing / f"mixpanel-live-{yesterday.isoformat()}.jsonl"
        if not target.exists():
            try:
                export_live(credentials, yesterday, yesterday, target)
                context.log.info(f"exported {yesterday} from Mixpanel into {target.name}")
            except MixpanelExportError as error:
                context.log.error(str(error))
                problems.append(str(error))
    folder = load_landing_folder(database.url(), landing)
    for problem in folder.refused:
        context.log.warning(problem.message)
    for problem in folder.failed:
        context.log.error(problem.message)
    problems += [problem.message for problem in folder.failed + folder.refused]
    results = [result for result in folder.results if not result.skipped]
    totals = {
        field: sum(getattr(result, field) for result in results)
        for field in ("lines_read", "loaded", "duplicates", "quarantined")
    }
    if totals["quarantined"]:
        context.log.warning(f"{totals['quarantined']} lines quarantined in raw_mixpanel.events_quarantine")
    check_results = []
    if context.selected_asset_check_keys:
        check_results.append(
            AssetCheckResult(
                check_name=EXPORT_FILES_LOADED,
                passed=not problems,
                severity=AssetCheckSeverity.ERROR,
                description="; ".join(problems) or "every export file loaded",
                metadata={"failed": len(folder.failed), "refused": len(folder.refused)},
            )
        )
    return MaterializeResult(
        metadata={
            # The table's rows after the load, as Dagster's catalog shows row counts.
            "dagster/row_count": features.table_row_count(database.url(), "raw_mixpanel", "events"),
            "files_loaded": len(results),
            **totals,
            "reconciles": totals["lines_read"] == totals["loaded"] + totals["duplicates"] + totals["quarantined"],
            "files_failed": len(folder.failed),
            "entries_refused": len(folder.refused),
            "files": MetadataValue.md(
                "| file | from line | read | loaded | duplicates | quarantined |\n|---|---|---|---|---|---|\n"
                + "".join(
                    f"| {r.source_file} | {r.first_line} | {r.lines_read} | {r.loaded} | {r.duplicates} "
                    f"| {r.quarantined} |\n"
                    for r in results
                )
            ),
            **({"problems": MetadataValue.md("".join(f"- {message}\n" for message in problems))} if problems else {}),
        },
        check_results=check_results,
    )
