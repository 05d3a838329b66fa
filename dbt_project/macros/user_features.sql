{#- The definition of a member's features, shared by the mart marts.user_features and by the function
    marts.user_features_live that the online updater (`teamu realtime`) calls: one text, so the two can't drift.
    Both start from two CTEs named `users` (the members to compute, from stg_supabase__users) and `interactions`
    (their rows of marts.interactions, or of what marts.interactions will hold after the next refresh); the
    macros below add the rest. tests/integration/test_realtime.py checks the two agree on every column. -#}

{#- The CTEs from the members' interactions, projects and posts to `features`, one row per member. The
    relations without the database, as the function below stores this text. -#}
{% macro user_features_ctes() %}
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
    where recency_rank <= {{ var('history_length') }}
    group by user_id
),

projects as (
    select
        user_id,
        array_agg(title order by created_at, project_id) filter (where title is not null) as project_titles,
        max(created_at) as last_project_at
    from {{ ref('stg_supabase__projects').include(database=false) }}
    where user_id in (select user_id from users)
    group by user_id
),

created_posts as (
    select
        user_id,
        array_agg(title order by created_at, post_id) filter (where title is not null) as created_post_titles,
        max(greatest(created_at, updated_at)) as last_post_at
    from {{ ref('stg_supabase__posts').include(database=false) }}
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
{% endmacro %}

{#- feature_hash of a `features` row: every feature column, not user_id, updated_at or refreshed_at. -#}
{% macro user_feature_hash() -%}
    {{ hash_values([
        'username', 'passions', 'latitude', 'longitude', 'bio', 'project_titles', 'created_post_titles',
        'viewed_count', 'upvoted_count', 'commented_count', 'recent_post_ids', 'extract(epoch from created_at)',
    ]) }}
{%- endmacro %}

{#- int_interactions' incremental filter: per source, source rows newer than the newest of that source already
    in `processed` (int_interactions), at most the time it was processed (a vote or comment stamped ahead by
    its client must not hide the ones made before that time), less the lookback for rows committed late. One
    uncorrelated watermark per source (each computed once), so the filter reaches the raw tables' indexes. -#}
{% macro new_interaction_filter(processed) -%}
    source_loaded_at > case source
        {%- for source in ['mixpanel', 'supabase_votes', 'supabase_comments'] %}
        when '{{ source }}' then (
            select coalesce(least(max(seen.source_loaded_at), max(seen.loaded_at)), '-infinity'::timestamptz)
            from {{ processed }} as seen
            where seen.source = '{{ source }}'
        )
        {%- endfor %}
    end - interval '{{ var("incremental_lookback") }}'
{%- endmacro %}

{#- marts.user_features_live(user_ids): the members' rows of marts.user_features as the next incremental
    refresh will compute them, from the same CTEs, plus pending_post_ids (posts they engaged with that
    marts.interactions doesn't hold yet; the serving functions exclude them through ml.user_online_state).
    Their interactions are the rows marts.interactions holds, those int_interactions holds that it doesn't yet
    (marts.interactions' own incremental rule), and the source rows int_interactions will take on its next run
    (its own filter, new_interaction_filter): every row by key once, as the merges on interaction_id keep them.
    Run as a post-hook of marts.user_features, so every build of the mart creates it from the same text, unless
    the stored function already has this text: its comment holds the text's md5, and when that matches, the hook
    is empty (the sensor's runs would otherwise replace an unchanged function every time, under a lock).
    The result columns are the mart's (without refreshed_at), in its order, then pending_post_ids. Relations are
    named without the database (dbt's default names it): the stored function then works in a database restored
    under another name. -#}
{% macro create_user_features_live() %}
{%- set signature = this.schema ~ ".user_features_live(bigint[])" -%}
{%- set definition -%}
create or replace function {{ this.schema }}.user_features_live(p_user_ids bigint[])
returns table (
    user_id bigint,
    username text,
    passions text[],
    latitude double precision,
    longitude double precision,
    bio text,
    project_titles text[],
    created_post_titles text[],
    viewed_count bigint,
    upvoted_count bigint,
    commented_count bigint,
    recent_post_ids bigint[],
    created_at timestamptz,
    updated_at timestamptz,
    feature_hash text,
    pending_post_ids bigint[]
)
language sql
stable
set search_path = pg_catalog, pg_temp
as $fn$
with
users as (
    select * from {{ ref('stg_supabase__users').include(database=false) }} where user_id = any(p_user_ids)
),

merged as (
    select user_id, post_id, kind, occurred_at
    from {{ ref('interactions').include(database=false) }}
    where user_id = any(p_user_ids)
),

unmerged as (
    select user_id, post_id, kind, occurred_at
    from {{ ref('int_interactions').include(database=false) }}
    where user_id = any(p_user_ids)
        and loaded_at > (
            select coalesce(max(loaded_at), '-infinity'::timestamptz)
            from {{ ref('interactions').include(database=false) }}
        )
    union all
    select user_id, post_id, kind, occurred_at
    from {{ ref('int_interaction_candidates').include(database=false) }}
    where rejection_reason is null
        and user_id = any(p_user_ids)
        and {{ new_interaction_filter(ref('int_interactions').include(database=false)) }}
),

interactions as (
    select * from merged
    union
    select * from unmerged
),

-- One aggregate over all the users (an anti join), not a subquery per user: under sustained load, before the
-- next refresh, a user's unmerged rows number in the hundreds.
pending as (
    select unmerged.user_id, array_agg(distinct unmerged.post_id order by unmerged.post_id) as post_ids
    from unmerged
    where not exists (
        select 1 from merged where merged.user_id = unmerged.user_id and merged.post_id = unmerged.post_id
    )
    group by unmerged.user_id
),

{{ user_features_ctes() }}

select
    features.*,
    {{ user_feature_hash() }} as feature_hash,
    coalesce(pending.post_ids, '{}'::bigint[]) as pending_post_ids
from features
left join pending on pending.user_id = features.user_id
$fn$;

revoke all on function {{ signature }} from public;
{%- endset -%}
{%- set fingerprint = "marts.user_features for a few members, computed on demand (dbt macro create_user_features_live); definition md5 " ~ local_md5(definition) -%}
{%- if execute -%}
    {%- set stored = run_query(
        "select obj_description(to_regprocedure('" ~ signature ~ "'), 'pg_proc')"
    ).columns[0].values()[0] -%}
    {%- if stored == fingerprint -%}
        {{- return("") -}}
    {%- endif -%}
{%- endif %}
{{ definition }}
comment on function {{ signature }} is '{{ fingerprint }}';
{% endmacro %}
