-- A flagged location never leaks through, and every kept one is on the globe.
-- Reads several models: the meta names the one it is shown on as a Dagster asset check.
{{ config(meta={'dagster': {'ref': {'name': 'stg_supabase__posts'}}}) }}

{% for model in ['stg_supabase__users', 'stg_supabase__posts'] %}
select '{{ model }}' as model, latitude, longitude, has_invalid_location
from {{ ref(model) }}
where (has_invalid_location and (latitude is not null or longitude is not null))
    or not coalesce(latitude between -90 and 90 and longitude between -180 and 180, true)
{% if not loop.last %}union all{% endif %}
{% endfor %}
