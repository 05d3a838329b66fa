-- Members, cleaned: blank texts are NULL, passions never NULL (the empty array), unusable coordinates NULL
-- with has_invalid_location saying so; a row with an implausible time (macros/cleaning.sql) is left out.
with source as (
    select * from {{ source('supabase', 'users') }}
)

select
    user_id,
    {{ clean_text('username') }} as username,
    {{ clean_text('bio') }} as bio,
    {{ clean_text_array('passions') }} as passions,
    case when not {{ is_invalid_location('latitude', 'longitude') }} then latitude end as latitude,
    case when not {{ is_invalid_location('latitude', 'longitude') }} then longitude end as longitude,
    {{ is_invalid_location('latitude', 'longitude') }} as has_invalid_location,
    created_at,
    updated_at
from source
where not {{ is_implausible_time('created_at') }} and not {{ is_implausible_time('updated_at') }}
