{{
    config(
        materialized='incremental',
        unique_key='post_id',
        incremental_strategy='merge',
        indexes=[
            {'columns': ['post_id'], 'unique': True},
            {'columns': ['user_id']},
            {'columns': ['refreshed_at']},
        ],
    )
}}
-- One row per post: the candidate tower's features and the analysts' post table.
-- Incremental like user_features: only posts touched since the last refresh are recomputed and merged.
-- Comments and votes come straight from Supabase (all of them, the author's too: they are what readers see);
-- views and view times come from marts.interactions.
{% set lookback = "interval '" ~ var('incremental_lookback') ~ "'" %}

with
{% if is_incremental() %}
last_refresh as (
    -- At most the last refresh's own clock, as in user_features: a time stamped ahead hides nothing.
    select
        max(refreshed_at) as refreshed_at,
        least(max(updated_at), max(refreshed_at)) - {{ lookback }} as source_watermark
    from {{ this }}
),

touched_posts as (
    select post_id from {{ ref('interactions') }}
    where loaded_at > (select refreshed_at from last_refresh)
    union
    select post_id from {{ ref('stg_supabase__posts') }}
    where greatest(created_at, updated_at) > (select source_watermark from last_refresh)
    union
    select post_id from {{ ref('stg_supabase__comments') }}
    where created_at > (select source_watermark from last_refresh)
    union
    select post_id from {{ ref('stg_supabase__votes') }}
    where created_at > (select source_watermark from last_refresh)
    union
    -- Posts not here yet, whatever their timestamps say.
    select posts.post_id from {{ ref('stg_supabase__posts') }} as posts
    where not exists (select 1 from {{ this }} as seen where seen.post_id = posts.post_id)
),
{% endif %}

-- An incremental run looks the touched ids up as an array: the planner can't estimate the touched set (it
-- compares with watermarks known only at run time, guessed at a third of each table), and for `in (select ...)`
-- it hashes whole tables, marts.interactions included, for a few hundred ids; an array is planned as a few ids,
-- through the indexes. comments and votes below have no index on post_id in Supabase (a hash join is their best
-- plan) and a full build takes every row: both keep `in`.
posts as (
    select * from {{ ref('stg_supabase__posts') }}
    {% if is_incremental() %} where post_id = any(array(select post_id from touched_posts)) {% endif %}
),

post_interactions as (
    select
        post_id,
        count(*) filter (where kind = 'view') as view_count,
        count(distinct user_id) as engaged_user_count,
        avg(duration_ms) filter (where kind = 'view') as avg_duration_ms,
        max(occurred_at) as last_interaction_at
    from {{ ref('interactions') }}
    {% if is_incremental() %} where post_id = any(array(select post_id from posts))
    {% else %} where post_id in (select post_id from posts) {% endif %}
    group by post_id
),

post_comments as (
    select
        post_id,
        array_agg(body order by created_at desc, comment_id desc) filter (where body is not null) as comments,
        max(created_at) as last_comment_at
    from {{ ref('stg_supabase__comments') }}
    where post_id in (select post_id from posts)
    group by post_id
),

post_votes as (
    select post_id, sum(value) as vote_count, max(created_at) as last_vote_at
    from {{ ref('stg_supabase__votes') }}
    where post_id in (select post_id from posts)
    group by post_id
),

features as (
    select
        posts.post_id,
        posts.user_id,
        posts.title,
        posts.description,
        char_length(coalesce(posts.title, '')) + char_length(coalesce(posts.description, '')) as post_length,
        coalesce(post_comments.comments, '{}'::text[]) as comments,
        coalesce(post_votes.vote_count, 0)::bigint as vote_count,
        coalesce(post_interactions.view_count, 0) as view_count,
        coalesce(post_interactions.engaged_user_count, 0) as engaged_user_count,
        make_interval(secs => post_interactions.avg_duration_ms::double precision / 1000) as avg_time_viewed,
        posts.is_local,
        posts.latitude,
        posts.longitude,
        posts.created_at,
        greatest(
            posts.updated_at,
            post_interactions.last_interaction_at,
            post_comments.last_comment_at,
            post_votes.last_vote_at
        ) as updated_at
    from posts
    left join post_interactions on post_interactions.post_id = posts.post_id
    left join post_comments on post_comments.post_id = posts.post_id
    left join post_votes on post_votes.post_id = posts.post_id
)

select
    features.*,
    {{ hash_values([
        'user_id', 'title', 'description', 'post_length', 'comments', 'vote_count', 'view_count',
        'extract(epoch from avg_time_viewed)', 'is_local', 'latitude', 'longitude',
        'extract(epoch from created_at)',
    ]) }} as feature_hash,
    now() as refreshed_at
from features
