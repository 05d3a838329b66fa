with source as (
    select * from {{ source('supabase', 'projects') }}
)

select
    project_id,
    user_id,
    {{ clean_text('title') }} as title,
    created_at
from source
where not {{ is_implausible_time('created_at') }}
