-- Posts, cleaned like users: blank texts NULL, unusable coordinates NULL with has_invalid_location; a row with an
-- implausible time (macros/cleaning.sql) is left out.
with source as (
    select * from {{ source('supabase', 'posts') }}
)

select
    post_id,
    user_id,
    {{ clean_text('title') }} as title,
    {{ clean_text('description') }} as description,
    is_local,
    case when not {{ is_invalid_location('latitude', 'longitude') }} then latitude end as latitude,
    case when not {{ is_invalid_location('latitude', 'longitude') }} then longitude end as longitude,
    {{ is_invalid_location('latitude', 'longitude') }} as has_invalid_location,
    created_at,
    updated_at
from source
where not {{ is_implausible_time('created_at') }} and not {{ is_implausible_time('updated_at') }}
