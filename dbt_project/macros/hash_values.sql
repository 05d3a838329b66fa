{#- md5 of a list of SQL expressions, used for surrogate keys and for the feature_hash of the feature marts.
    The values go through a jsonb array, so NULLs, arrays and numbers are told apart without separators that
    a text value could contain. Pass timestamps and intervals as extract(epoch from ...): their text form
    depends on the session's TimeZone / IntervalStyle, which would change the hash without a change of value. -#}
{% macro hash_values(expressions) -%}
    md5(jsonb_build_array({{ expressions | join(', ') }})::text)
{%- endmacro %}
