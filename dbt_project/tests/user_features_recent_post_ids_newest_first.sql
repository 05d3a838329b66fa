-- recent_post_ids holds distinct posts, at most var('history_length') of them, and is exactly the member's most
-- recently engaged posts in marts.interactions, newest engagement first (ties by post_id, descending).
-- Reads several models: the meta names the one it is shown on as a Dagster asset check.
{{ config(meta={'dagster': {'ref': {'name': 'user_features'}}}) }}

with last_engagement as (
    select user_id, post_id, max(occurred_at) as engaged_at
    from {{ ref('interactions') }}
    group by user_id, post_id
),

ranked as (
    select
        user_id,
        post_id,
        row_number() over (partition by user_id order by engaged_at desc, post_id desc) as recency_rank
    from last_engagement
),

expected as (
    select user_id, array_agg(post_id order by recency_rank) as recent_post_ids
    from ranked
    where recency_rank <= {{ var('history_length') }}
    group by user_id
)

select features.user_id, features.recent_post_ids, expected.recent_post_ids as expected_recent_post_ids
from {{ ref('user_features') }} as features
left join expected on expected.user_id = features.user_id
where cardinality(features.recent_post_ids) > {{ var('history_length') }}
    or cardinality(features.recent_post_ids)
    <> (select count(distinct post_id) from unnest(features.recent_post_ids) as ids (post_id))
    or features.recent_post_ids <> coalesce(expected.recent_post_ids, '{}'::bigint[])
