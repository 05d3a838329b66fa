{{
    config(
        materialized='incremental',
        unique_key='interaction_id',
        incremental_strategy='merge',
        indexes=[
            {'columns': ['interaction_id'], 'unique': True},
            {'columns': ['user_id', 'post_id']},
            {'columns': ['post_id']},
            {'columns': ['loaded_at']},
        ],
    )
}}
-- One row per (user, post, kind, time): the interactions training, serving and analysts read.
-- Incremental: takes the rows int_interactions wrote since this table's newest loaded_at. loaded_at here is
-- when a row arrived in this table, so the feature marts can use it as their watermark even when this model
-- and they run in different dbt invocations.
with new_rows as (
    select *
    from {{ ref('int_interactions') }}
    {% if is_incremental() %}
        where loaded_at > (select coalesce(max(loaded_at), '-infinity'::timestamptz) from {{ this }})
    {% endif %}
)

select
    interaction_id,
    user_id,
    post_id,
    kind,
    occurred_at,
    duration_ms,
    source,
    now() as loaded_at
from new_rows
{% if is_incremental() %}
    where not exists (select 1 from {{ this }} as seen where seen.interaction_id = new_rows.interaction_id)
{% endif %}
