-- Every post's view_count equals its views in marts.interactions and its vote_count the sum of its Supabase
-- votes; post_length is the characters of title and description.
-- Reads several models: the meta names the one it is shown on as a Dagster asset check.
{{ config(meta={'dagster': {'ref': {'name': 'post_features'}}}) }}

with views as (
    select post_id, count(*) as view_count
    from {{ ref('interactions') }}
    where kind = 'view'
    group by post_id
),

votes as (
    select post_id, sum(value) as vote_count
    from {{ ref('stg_supabase__votes') }}
    group by post_id
)

select features.post_id, features.view_count, features.vote_count, features.post_length
from {{ ref('post_features') }} as features
left join views on views.post_id = features.post_id
left join votes on votes.post_id = features.post_id
where features.view_count <> coalesce(views.view_count, 0)
    or features.vote_count <> coalesce(votes.vote_count, 0)
    or features.post_length
    <> char_length(coalesce(features.title, '')) + char_length(coalesce(features.description, ''))
