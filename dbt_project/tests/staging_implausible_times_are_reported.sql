-- Raw Supabase rows left out of staging for an implausible time (macros/cleaning.sql: before 2000, more than a
-- day ahead of the clock, infinity): a warning, with the count per table, so an operator sees what was dropped.
-- Reads several sources: the meta names the model it is shown on as a Dagster asset check.
{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'stg_supabase__posts'}}}) }}

{% set checked = {
    'users': ['created_at', 'updated_at'],
    'posts': ['created_at', 'updated_at'],
    'votes': ['created_at'],
    'comments': ['created_at'],
    'projects': ['created_at'],
    'project_members': ['joined_at'],
} %}
{% for table, columns in checked.items() %}
select '{{ table }}' as source_table, count(*) as left_out
from {{ source('supabase', table) }}
where {% for column in columns %}{{ is_implausible_time(column) }}{% if not loop.last %} or {% endif %}{% endfor %}
having count(*) > 0
{% if not loop.last %}union all{% endif %}
{% endfor %}
