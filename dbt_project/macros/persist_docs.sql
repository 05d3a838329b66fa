{#- dbt writes every documented COMMENT again after each build (persist_docs in dbt_project.yml): a COMMENT per
    column, each a catalog write under a lock, on every run of the sensor's incremental refresh, where they have
    not changed. Here one catalog query compares what is stored with what the .yml files say, and the comments are
    written (by dbt's own macro) only when one differs: after a rebuild, a first build, or an edited description. -#}
{% macro postgres__persist_docs(relation, model, for_relation, for_columns) -%}
  {%- if not teamu_comments_match(relation, model, for_relation, for_columns) -%}
    {%- do default__persist_docs(relation, model, for_relation, for_columns) -%}
  {%- endif -%}
{%- endmacro %}


{% macro teamu_comments_match(relation, model, for_relation, for_columns) -%}
  {%- set expected = [] -%}
  {%- if for_relation and config.persist_relation_docs() and model.description -%}
    {%- do expected.append("(null, " ~ postgres_escape_comment(model.description) ~ ")") -%}
  {%- endif -%}
  {%- if for_columns and config.persist_column_docs() and model.columns -%}
    {%- for name, column in model.columns.items() -%}
      {%- do expected.append("(" ~ dbt.string_literal(name) ~ ", " ~ postgres_escape_comment(column.description) ~ ")") -%}
    {%- endfor -%}
  {%- endif -%}
  {%- if not expected -%}
    {{ return(true) }}
  {%- endif -%}
  {%- set query -%}
    -- A documented column the table lacks is skipped, as dbt's own macro skips it.
    select count(*) = 0
    from (values {{ expected | join(", ") }}) as expected (column_name, description)
    left join pg_attribute as attribute
        on attribute.attrelid = '{{ relation.include(database=false) }}'::regclass
        and attribute.attname = expected.column_name
        and not attribute.attisdropped
    where (expected.column_name is null or attribute.attnum is not null)
        and coalesce(expected.description, '') is distinct from coalesce(
            case
                when expected.column_name is null then obj_description('{{ relation.include(database=false) }}'::regclass, 'pg_class')
                else col_description(attribute.attrelid, attribute.attnum)
            end,
            ''
        )
  {%- endset -%}
  {{ return(run_query(query).columns[0].values()[0]) }}
{%- endmacro %}
