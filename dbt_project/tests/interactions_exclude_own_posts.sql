-- Nobody's interactions with their own posts reach the mart (int_interaction_candidates rejects them).
-- Reads several models: the meta names the one it is shown on as a Dagster asset check.
{{ config(meta={'dagster': {'ref': {'name': 'interactions'}}}) }}

select interactions.interaction_id, interactions.user_id, interactions.post_id
from {{ ref('interactions') }} as interactions
join {{ ref('post_features') }} as posts on posts.post_id = interactions.post_id
where posts.user_id = interactions.user_id
