{{
    config(
        materialized='incremental',
        unique_key='user_id',
        incremental_strategy='merge',
        indexes=[
            {'columns': ['user_id'], 'unique': True},
            {'columns': ['refreshed_at']},
        ],
        post_hook="{{ create_user_features_live() }}",
    )
}}
-- depends_on: {{ ref('int_interactions') }}
-- depends_on: {{ ref('int_interaction_candidates') }}
-- One row per member: the query tower's features and the analysts' user table. The features themselves are
-- macros/user_features.sql, which the post-hook also turns into marts.user_features_live (the same rows for
-- a few members, computed on demand by the online updater); the two depends_on lines are that function's inputs.
-- Incremental: a refresh recomputes only the users touched since the last one (see touched_users) and merges
-- them on user_id; every other row, its updated_at and feature_hash included, stays as it was.
{% set lookback = "interval '" ~ var('incremental_lookback') ~ "'" %}

with
{% if is_incremental() %}
last_refresh as (
    select
        max(refreshed_at) as refreshed_at,
        -- The newest source time already reflected here, for the Supabase tables (which carry no load time),
        -- at most the last refresh's own clock: staging lets client times run up to a day ahead, and a row
        -- stamped hours ahead must not hide the edits made before that hour.
        least(max(updated_at), max(refreshed_at)) - {{ lookback }} as source_watermark
    from {{ this }}
),

touched_users as (
    select user_id from {{ ref('interactions') }}
    where loaded_at > (select refreshed_at from last_refresh)
    union
    select user_id from {{ ref('stg_supabase__users') }}
    where updated_at > (select source_watermark from last_refresh)
    union
    select user_id from {{ ref('stg_supabase__projects') }}
    where created_at > (select source_watermark from last_refresh)
    union
    select user_id from {{ ref('stg_supabase__posts') }}
    where greatest(created_at, updated_at) > (select source_watermark from last_refresh)
    union
    -- Members not here yet, whatever their timestamps say.
    select users.user_id from {{ ref('stg_supabase__users') }} as users
    where not exists (select 1 from {{ this }} as seen where seen.user_id = users.user_id)
),
{% endif %}

-- An incremental run looks the touched ids up as an array: the planner can't estimate the touched set (it
-- compares with watermarks known only at run time, guessed at a third of each table), and for `in (select ...)`
-- it hashes whole tables, marts.interactions included, for a few hundred ids; an array is planned as a few ids,
-- through the indexes. projects and posts below have no index on user_id in Supabase (a hash join is their best
-- plan) and a full build takes every row: both keep `in`.
users as (
    select * from {{ ref('stg_supabase__users') }}
    {% if is_incremental() %} where user_id = any(array(select user_id from touched_users)) {% endif %}
),

interactions as (
    select * from {{ ref('interactions') }}
    {% if is_incremental() %} where user_id = any(array(select user_id from users))
    {% else %} where user_id in (select user_id from users) {% endif %}
),

{{ user_features_ctes() }}

select
    features.*,
    {{ user_feature_hash() }} as feature_hash,
    now() as refreshed_at
from features
