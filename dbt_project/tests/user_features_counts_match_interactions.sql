-- Every member's counts equal what marts.interactions holds for them: an incremental refresh that missed a
-- touched member leaves a stale count and fails here.
-- Reads several models: the meta names the one it is shown on as a Dagster asset check.
{{ config(meta={'dagster': {'ref': {'name': 'user_features'}}}) }}

with expected as (
    select
        user_id,
        count(*) filter (where kind = 'view') as viewed_count,
        count(*) filter (where kind = 'upvote') as upvoted_count,
        count(*) filter (where kind = 'comment') as commented_count
    from {{ ref('interactions') }}
    group by user_id
)

select
    features.user_id,
    features.viewed_count,
    features.upvoted_count,
    features.commented_count,
    expected.viewed_count as expected_viewed_count,
    expected.upvoted_count as expected_upvoted_count,
    expected.commented_count as expected_commented_count
from {{ ref('user_features') }} as features
left join expected on expected.user_id = features.user_id
where (features.viewed_count, features.upvoted_count, features.commented_count)
    is distinct from (
        coalesce(expected.viewed_count, 0), coalesce(expected.upvoted_count, 0), coalesce(expected.commented_count, 0)
    )
