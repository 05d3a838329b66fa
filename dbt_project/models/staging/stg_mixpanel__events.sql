-- Mixpanel events with the properties the platform uses as typed columns. An id that is not a whole number
-- (an anonymous visitor's distinct_id, a malformed post_id) becomes NULL instead of failing the view;
-- int_interactions counts such rows as rejected.
with source as (
    select * from {{ source('mixpanel', 'events') }}
)

select
    insert_id,
    event as event_name,
    distinct_id,
    {{ text_to_bigint('distinct_id') }} as user_id,
    event_time,
    {{ text_to_bigint("properties ->> 'post_id'") }} as post_id,
    -- A negative or non-numeric view time is a tracking bug: no duration rather than a wrong one.
    case
        when properties ->> 'duration_ms' ~ '^\s*[0-9]{1,15}(\.[0-9]*)?\s*$'
            then round(btrim(properties ->> 'duration_ms')::numeric)::bigint
    end as duration_ms,
    {{ clean_text("properties ->> 'request_id'") }} as request_id,
    {{ clean_text("properties ->> 'model_version'") }} as model_version,
    case
        when jsonb_typeof(properties -> 'post_ids') = 'array' then array(
            select {{ text_to_bigint('shown.post_id') }}
            from jsonb_array_elements_text(properties -> 'post_ids') with ordinality as shown (post_id, position)
            where {{ text_to_bigint('shown.post_id') }} is not null
            order by shown.position
        )
    end as shown_post_ids,
    properties,
    source_file,
    loaded_at
from source
