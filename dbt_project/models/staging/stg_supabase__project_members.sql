with source as (
    select * from {{ source('supabase', 'project_members') }}
)

select
    project_id,
    user_id,
    lower({{ clean_text('role') }}) as role,
    joined_at
from source
where not {{ is_implausible_time('joined_at') }}
