"""The partitioned embedding refresh: user and post embeddings rewritten with the promoted model in
DEFAULT_PARTITIONS pieces (a hash of the id, teamu_assets/db/partitions.py), one Dagster static partition each.

A backfill of every partition of the `partitioned_embedding_refresh` job runs one run per partition (Dagster's
default for partitioned assets without a backfill policy; on
Kubernetes, one pod each: deploy/values.yaml); a failed partition is retried alone. Each partition stages its
rows; the partition that completes the set swaps them all in at once (db/partitions.py says how readers never see
a mix). The unpartitioned ml/user_embeddings and ml/post_embeddings assets stay what the full refresh, the
incremental refresh and a new model's promotion use.
"""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
)

from teamu_assets.db.partitions import DEFAULT_PARTITIONS
from teamu_assets.resources import TeamuDatabase, TowerPreloader

EMBEDDING_PARTITIONS = [AssetKey(["ml", "user_embedding_partitions"]), AssetKey(["ml", "post_embedding_partitions"])]
embedding_partitions = StaticPartitionsDefinition([str(partition) for partition in range(DEFAULT_PARTITIONS)])
# Partition runs only stage rows of their own; the swap takes the writers' lock of its kind. Their own tag value
# lets the run queue start them side by side (the marts-and-embeddings value allows one run at a time).
PARTITIONED_REFRESH_TAGS = {"teamu/writes": "embedding-partitions"}


def _refresh_partition(
    context: AssetExecutionContext, database: TeamuDatabase, preloader: TowerPreloader, kind: str
) -> MaterializeResult:
    from teamu_assets.db.partitions import partition_ids, publish_partitions, stage_partition
    from teamu_assets.model.pipeline import embed_for_serving

    partition = int(context.partition_key)
    url = database.url()
    with database.embedding_store() as store:
        promoted = store.promoted_model()
        if promoted is None:
            reason = "no model is promoted: nothing to embed with"
            context.log.warning(reason)
            return MaterializeResult(metadata={"staged": False, "reason": reason, "rows": 0})
        preloader.wait()
        ids = partition_ids(url, kind, partition, DEFAULT_PARTITIONS)  # type: ignore[arg-type]
        ids, vectors, dim = embed_for_serving(url, promoted, kind, ids)
        store.ensure_ready(dim)
    version = promoted.model_version
    staged = stage_partition(url, kind, partition, DEFAULT_PARTITIONS, ids, vectors, version)  # type: ignore[arg-type]
    published = publish_partitions(url, kind, DEFAULT_PARTITIONS, version)  # type: ignore[arg-type]
    context.log.info(
        f"partition {partition}: {staged} rows staged; "
        + (f"all partitions swapped in ({published.rows} rows)" if published.published else published.reason)
    )
    return MaterializeResult(
        metadata={
            "staged": True,
            "rows": staged,
            "model_version": version,
            "published": published.published,
            "published_rows": published.rows,
            "waiting_for": published.reason,
        }
    )


@asset(
    key=EMBEDDING_PARTITIONS[0],
    group_name="serving",
    # Not a table of its own: it stages rows, and the last partition swaps them into ml.<kind>_embeddings.
    kinds={"python", "pgvector"},
    deps=[AssetKey(["marts", "user_features"])],
    partitions_def=embedding_partitions,
)
def user_embedding_partitions(
    context: AssetExecutionContext, database: TeamuDatabase, tower_preloader: TowerPreloader
) -> MaterializeResult:
    """One partition of ml.user_embeddings rewritten with the promoted model; swapped in with the others."""
    return _refresh_partition(context, database, tower_preloader, "user")


@asset(
    key=EMBEDDING_PARTITIONS[1],
    group_name="serving",
    # Not a table of its own: it stages rows, and the last partition swaps them into ml.<kind>_embeddings.
    kinds={"python", "pgvector"},
    deps=[AssetKey(["marts", "post_features"])],
    partitions_def=embedding_partitions,
)
def post_embedding_partitions(
    context: AssetExecutionContext, database: TeamuDatabase, tower_preloader: TowerPreloader
) -> MaterializeResult:
    """One partition of ml.post_embeddings rewritten with the promoted model; swapped in with the others (the
    HNSW index is built once, over the union, by the partition that completes the set)."""
    return _refresh_partition(context, database, tower_preloader, "post")


partitioned_embedding_refresh_job = define_asset_job(
    "partitioned_embedding_refresh",
    selection=[user_embedding_partitions, post_embedding_partitions],
    partitions_def=embedding_partitions,
    tags=PARTITIONED_REFRESH_TAGS,
    description="Every embedding rewritten with the promoted model, in hash partitions run side by side; each "
    "kind swapped in whole when its last partition is staged.",
)
