{{
    config(
        materialized='incremental',
        unique_key='interaction_id',
        incremental_strategy='merge',
        indexes=[
            {'columns': ['interaction_id'], 'unique': True},
            {'columns': ['source', 'source_loaded_at']},
            {'columns': ['loaded_at']},
        ],
    )
}}
-- One deduplicated stream of interactions (view, upvote, comment) between known users and known posts.
-- Deduplicated on (user_id, post_id, kind, occurred_at): the first loaded copy wins.
-- Incremental: a refresh reads only source rows newer than this table's newest of the same source, less
-- var('incremental_lookback') for rows committed late, and skips rows already here, so rows never change once
-- written and loaded_at says when each arrived (the watermark of marts.interactions).
-- Left out for good: rows whose user or post appears only after the lookback window has passed (a late
-- parent), deleted or changed votes and comments; `dbt build --full-refresh` rebuilds from the sources.
with candidates as (
    select *
    from {{ ref('int_interaction_candidates') }}
    where rejection_reason is null
    {% if is_incremental() %}
        -- macros/user_features.sql: the online updater's function reads the same new rows.
        and {{ new_interaction_filter(this) }}
    {% endif %}
),

ranked as (
    select
        candidates.*,
        row_number() over (
            partition by user_id, post_id, kind, occurred_at
            order by source_loaded_at, source_key
        ) as copy_number
    from candidates
),

deduplicated as (
    select
        {{ hash_values(['user_id', 'post_id', 'kind', 'extract(epoch from occurred_at)']) }} as interaction_id,
        user_id,
        post_id,
        kind,
        occurred_at,
        duration_ms,
        source,
        source_loaded_at
    from ranked
    where copy_number = 1
)

select
    deduplicated.*,
    now() as loaded_at
from deduplicated
{% if is_incremental() %}
    where not exists (select 1 from {{ this }} as seen where seen.interaction_id = deduplicated.interaction_id)
{% endif %}
