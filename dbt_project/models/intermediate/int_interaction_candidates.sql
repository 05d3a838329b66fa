-- Every interaction the sources claim, before any is accepted: views from Mixpanel, upvotes and comments from
-- Supabase (the authoritative source of each), with the reason a row is left out (NULL when accepted).
-- int_interactions keeps the accepted ones; int_interactions_rejected counts the others.
-- A view; the incremental filter of int_interactions on source_loaded_at reaches the raw tables' indexes.
with views as (
    select
        user_id,
        post_id,
        'view' as kind,
        event_time as occurred_at,
        duration_ms,
        'mixpanel' as source,
        loaded_at as source_loaded_at,
        insert_id as source_key
    from {{ ref('stg_mixpanel__events') }}
    where event_name = '{{ var("post_viewed_event") }}'
),

upvotes as (
    select
        user_id,
        post_id,
        'upvote' as kind,
        created_at as occurred_at,
        null::bigint as duration_ms,
        'supabase_votes' as source,
        -- Supabase rows carry no load time: their creation time is the watermark.
        created_at as source_loaded_at,
        vote_id::text as source_key
    from {{ ref('stg_supabase__votes') }}
    where value = 1
),

comments as (
    select
        user_id,
        post_id,
        'comment' as kind,
        created_at as occurred_at,
        null::bigint as duration_ms,
        'supabase_comments' as source,
        created_at as source_loaded_at,
        comment_id::text as source_key
    from {{ ref('stg_supabase__comments') }}
),

candidates as (
    select * from views
    union all
    select * from upvotes
    union all
    select * from comments
)

select
    candidates.*,
    case
        when users.user_id is null then 'unknown_user'
        when posts.post_id is null then 'unknown_post'
        -- Authors looking at or reacting to their own posts say nothing about their taste, and serving never
        -- recommends a user's own posts: such rows would only skew training and evaluation.
        when posts.user_id = candidates.user_id then 'self_interaction'
    end as rejection_reason
from candidates
left join {{ ref('stg_supabase__users') }} as users on users.user_id = candidates.user_id
left join {{ ref('stg_supabase__posts') }} as posts on posts.post_id = candidates.post_id
