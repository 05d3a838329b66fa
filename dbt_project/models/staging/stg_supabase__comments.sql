with source as (
    select * from {{ source('supabase', 'comments') }}
)

select
    comment_id,
    post_id,
    user_id,
    {{ clean_text('body') }} as body,
    created_at
from source
where not {{ is_implausible_time('created_at') }}
