with source as (
    select * from {{ source('supabase', 'votes') }}
)

select
    vote_id,
    post_id,
    user_id,
    value::integer as value,
    created_at
from source
where not {{ is_implausible_time('created_at') }}
