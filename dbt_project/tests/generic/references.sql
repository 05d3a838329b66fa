{#
    dbt's `relationships` test between two tables of one source, the parent named by its table (`to: users`)
    rather than by `source('supabase', 'users')`: the same rows fail, but the test depends on the tested table
    only. dagster-dbt 0.29 shows a source test as an asset check of its table only when the test depends on that
    one table; a test that also depends on the parent would be left out of the checks.
#}
{% test references(model, column_name, to, field) %}
{%- set parent = api.Relation.create(database=model.database, schema=model.schema, identifier=to) -%}
select child.{{ column_name }}
from {{ model }} as child
where child.{{ column_name }} is not null
    and not exists (select 1 from {{ parent }} as parent where parent.{{ field }} = child.{{ column_name }})
{% endtest %}
