{#
    Warns about the rows of a source table whose time staging leaves out as implausible (macros/cleaning.sql:
    before 2000, more than a day ahead of the clock, or infinity); the failures are the rows left out. A column
    test of one table, so dagster-dbt shows it as an asset check of that source table.
#}
{% test plausible_time(model, column_name) %}
{{ config(severity='warn') }}
select {{ column_name }}
from {{ model }}
where {{ is_implausible_time(column_name) }}
{% endtest %}
