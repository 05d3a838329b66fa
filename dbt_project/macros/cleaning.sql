{#- Text cleaning shared by the staging models: surrounding whitespace trimmed, blank text is NULL. -#}
{% macro clean_text(column) -%}
    nullif(btrim({{ column }}), '')
{%- endmacro %}

{#- A text array without blank elements, elements trimmed, order kept; NULL becomes the empty array. -#}
{% macro clean_text_array(column) -%}
    array(
        select btrim(element)
        from unnest({{ column }}) with ordinality as elements (element, position)
        where nullif(btrim(element), '') is not null
        order by position
    )
{%- endmacro %}

{#- True when a coordinate pair is unusable: off the globe (NaN and infinities included) or half missing.
    Both missing is no location, not an invalid one. -#}
{% macro is_invalid_location(latitude, longitude) -%}
    (
        ({{ latitude }} is null) <> ({{ longitude }} is null)
        or not coalesce({{ latitude }} between -90 and 90 and {{ longitude }} between -180 and 180, true)
    )
{%- endmacro %}

{#- A JSON value (given as text) as bigint when it is a whole number of at most 18 digits, else NULL:
    a malformed id must not fail the whole model. -#}
{% macro text_to_bigint(text_value) -%}
    case when {{ text_value }} ~ '^\s*[0-9]{1,18}(\.0*)?\s*$' then btrim({{ text_value }})::numeric::bigint end
{%- endmacro %}

{#- True when a timestamp can't be when something happened in the app: before 2000-01-01, more than a day ahead
    of the clock, or +-infinity (Mixpanel events are held to the same range when loaded). Staging leaves rows
    carrying one out: a post dated 2100 would rank first for everyone, and a time far ahead would sit above every
    incremental watermark downstream. NULL is not judged here. -#}
{% macro is_implausible_time(column) -%}
    coalesce(not ({{ column }} between timestamptz '2000-01-01 00:00:00+00' and now() + interval '1 day'), false)
{%- endmacro %}
