{#- Models land in exactly the schema they configure (staging, intermediate, marts), not dbt's default
    "<target schema>_<custom schema>", so every consumer (serving functions, analysts, the analyst role's
    grants) can name them. Without a custom schema a model goes to the target's schema. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
