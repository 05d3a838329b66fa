{{
    config(
        materialized='incremental',
        unique_key='user_id',
        incremental_strategy='merge',
        indexes=[
            {'columns': ['user_id'], 'unique': True},
            {'columns': ['refreshed_at']},
        ],
    )
}}
-- One row per member: the query tower's features and the analysts' user table.
-- Incremental: a refresh recomputes only the users touched since the last one (see touched_users) and merges
-- them on user_id; every other row, its updated_at and feature_hash included, stays as it was.
{% set lookback = "interval '" ~ var('incremental_lookback') ~ "'" %}

with
{% if is_incremental() %}
last_refresh as (
    select
        max(refreshed_at) as refreshed_at,
        -- The newest source time already reflected here, for the Supabase tables (which carry no load time).
        max(updated_at) - {{ lookback }} as source_watermark
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

interaction_counts as (
    select
        user_id,
        count(*) filter (where kind = 'view') as viewed_count,
        count(*) filter (where kind = 'upvote') as upvoted_count,
        count(*) filter (where kind = 'comment') as commented_count,
        max(occurred_at) as last_interaction_at
    from interactions
    group by user_id
),

engaged_posts as (
    select
        user_id,
        post_id,
        row_number() over (partition by user_id order by max(occurred_at) desc, post_id desc) as recency_rank
    from interactions
    group by user_id, post_id
),

recent_posts as (
    select user_id, array_agg(post_id order by recency_rank) as recent_post_ids
    from engaged_posts
    where recency_rank <= 50
    group by user_id
),

projects as (
    select
        user_id,
        array_agg(title order by created_at, project_id) filter (where title is not null) as project_titles,
        max(created_at) as last_project_at
    from {{ ref('stg_supabase__projects') }}
    where user_id in (select user_id from users)
    group by user_id
),

created_posts as (
    select
        user_id,
        array_agg(title order by created_at, post_id) filter (where title is not null) as created_post_titles,
        max(greatest(created_at, updated_at)) as last_post_at
    from {{ ref('stg_supabase__posts') }}
    where user_id in (select user_id from users)
    group by user_id
),

features as (
    select
        users.user_id,
        users.username,
        users.passions,
        users.latitude,
        users.longitude,
        users.bio,
        coalesce(projects.project_titles, '{}'::text[]) as project_titles,
        coalesce(created_posts.created_post_titles, '{}'::text[]) as created_post_titles,
        coalesce(interaction_counts.viewed_count, 0) as viewed_count,
        coalesce(interaction_counts.upvoted_count, 0) as upvoted_count,
        coalesce(interaction_counts.commented_count, 0) as commented_count,
        coalesce(recent_posts.recent_post_ids, '{}'::bigint[]) as recent_post_ids,
        users.created_at,
        greatest(
            users.updated_at,
            interaction_counts.last_interaction_at,
            projects.last_project_at,
            created_posts.last_post_at
        ) as updated_at
    from users
    left join interaction_counts on interaction_counts.user_id = users.user_id
    left join recent_posts on recent_posts.user_id = users.user_id
    left join projects on projects.user_id = users.user_id
    left join created_posts on created_posts.user_id = users.user_id
)

select
    features.*,
    {{ hash_values([
        'username', 'passions', 'latitude', 'longitude', 'bio', 'project_titles', 'created_post_titles',
        'viewed_count', 'upvoted_count', 'commented_count', 'recent_post_ids', 'extract(epoch from created_at)',
    ]) }} as feature_hash,
    now() as refreshed_at
from features
