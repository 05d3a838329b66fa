-- Teamu's app-facing API and the grants around it, for the Supabase project the app runs on.
--
-- The app (supabase-js, through PostgREST) reaches exactly two functions in public:
--   public.recommend_posts(k)                    role authenticated: the signed-in user's own recommendations
--   public.recommend_posts_for_user(user_id, k)  role service_role:  any user's (backend jobs, support tools)
-- Both are SECURITY DEFINER: they run as their owner, who reads ml and marts; the API roles get no privilege on
-- any platform schema (ml, marts, staging, intermediate, raw_supabase, raw_mixpanel), and anon gets nothing.
--
-- Apply it as the role that owns the platform's schemas (`postgres` on Supabase, the TEAMU_DATABASE_URL role):
-- `supabase db push`, or `teamu db start`, which applies it on every start. Plain SQL, idempotent. Locally,
-- teamu_assets/db/sql/supabase_shim.sql first creates what Supabase would provide (roles anon, authenticated,
-- service_role). See docs/DATA_CONTRACT.md section 6.

create schema if not exists ml;

-- New functions get EXECUTE for PUBLIC, and Supabase's default privileges grant every new function in public to
-- anon as well. Functions this role creates from now on get neither (the same defaults still give new functions in
-- public to authenticated and service_role; the API's are revoked and granted explicitly below).
alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke execute on functions from anon;

-- The public wrapper earlier versions of the docs suggested: SECURITY INVOKER, taking any user id.
drop function if exists public.recommend_posts(bigint, integer, double precision);

-- The serving functions get their fixed search_path from teamu_assets/db/sql/serving_functions.sql, which the
-- pipeline installs after dbt. Ones installed before that file had it would run inside the API functions below
-- with their empty search_path and not find pgvector's type: give them the same path now.
do $$
declare
    entry_point regprocedure;
begin
    foreach entry_point in array array[
        to_regprocedure('ml.recommend_posts(bigint, integer, double precision)'),
        to_regprocedure('ml.similar_posts(bigint, integer, double precision)')
    ] loop
        continue when entry_point is null;
        execute format('alter function %s set search_path = pg_catalog, extensions, public, pg_temp', entry_point);
    end loop;
end
$$;

-- The Teamu user id of the request: the JWT's `sub` claim, which PostgREST puts in request.jwt.claims after
-- verifying the token. Teamu ids are bigints, so `sub` must be the user id in decimal ("42"; a JSON number is
-- accepted too); anything else is refused, never looked up.
-- Why not auth.uid(): Supabase's casts `sub` to uuid (Supabase Auth's own ids) and fails on "42". Why not
-- auth.jwt(): it casts to an unqualified jsonb, which a caller's temporary table named jsonb would replace.
-- search_path '': every name below is qualified or a keyword type (temporary objects come first in an empty
-- path: pg_catalog.text, never text).
create or replace function ml.request_user_id() returns bigint
language plpgsql
stable
set search_path = ''
as $$
declare
    v_sub pg_catalog.text :=
        nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::pg_catalog.jsonb ->> 'sub';
    v_is_user_id boolean;
begin
    if v_sub is null then
        raise exception 'no signed-in user: request.jwt.claims has no "sub"'
            using errcode = 'insufficient_privilege',
                hint = 'Call the API with a signed-in user''s JWT (supabase-js: after signing in).';
    end if;
    -- Digits only, no sign, no leading zero, at most 19 of them; only then the cast (a separate statement, so it
    -- never sees anything but digits) checks the bigint range.
    if v_sub !~ '^(0|[1-9][0-9]{0,18})$' then
        v_is_user_id := false;
    else
        v_is_user_id := v_sub::pg_catalog.numeric <= 9223372036854775807;
    end if;
    if not v_is_user_id then
        raise exception 'the JWT "sub" % is not a Teamu user id (a whole number from 0 to 9223372036854775807)',
            pg_catalog.to_jsonb(pg_catalog.left(v_sub, 40))
            using errcode = 'invalid_authorization_specification';
    end if;
    return v_sub::bigint;
end
$$;

comment on function ml.request_user_id() is
    'The Teamu user id of the current API request: the JWT sub claim from request.jwt.claims, a decimal bigint.';

-- The signed-in user's recommendations: ml.recommend_posts for the user of the JWT, nobody else. There is no
-- parameter to name a user. VOLATILE as ml.recommend_posts (supabase-js rpc() calls it with POST, its default).
create or replace function public.recommend_posts(k integer default 20)
returns table (post_id bigint, score real)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if k is null or k < 1 or k > 1000 then
        raise exception 'recommend_posts: k must be between 1 and 1000, got %', coalesce(k::pg_catalog.text, 'null')
            using errcode = 'invalid_parameter_value';
    end if;
    -- Columns by name, order by position: a column ml.recommend_posts may add later changes nothing here.
    return query
    select r.post_id, r.score
    from ml.recommend_posts(ml.request_user_id(), k) with ordinality as r
    order by r.ordinality;
end
$$;

comment on function public.recommend_posts(integer) is
    'The signed-in user''s top k recommended posts (post_id, score; best first). The user is the JWT''s sub.';

-- Any user's recommendations, for the service role only (its key never reaches a browser).
create or replace function public.recommend_posts_for_user(user_id bigint, k integer default 20)
returns table (post_id bigint, score real)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if user_id is null then
        raise exception 'recommend_posts_for_user: user_id must not be null' using errcode = 'invalid_parameter_value';
    end if;
    if k is null or k < 1 or k > 1000 then
        raise exception 'recommend_posts_for_user: k must be between 1 and 1000, got %',
            coalesce(k::pg_catalog.text, 'null') using errcode = 'invalid_parameter_value';
    end if;
    return query
    select r.post_id, r.score
    from ml.recommend_posts(user_id, k) with ordinality as r
    order by r.ordinality;
end
$$;

comment on function public.recommend_posts_for_user(bigint, integer) is
    'User user_id''s top k recommended posts (post_id, score; best first). service_role only.';

revoke all on function public.recommend_posts(integer) from public, anon, authenticated, service_role;
grant execute on function public.recommend_posts(integer) to authenticated;
revoke all on function public.recommend_posts_for_user(bigint, integer) from public, anon, authenticated, service_role;
grant execute on function public.recommend_posts_for_user(bigint, integer) to service_role;

-- The platform's schemas are closed to the API roles, including what earlier docs told deployments to grant
-- (usage on ml and marts, select on their tables, default privileges for the tables dbt and the embedding refresh
-- create). The definer functions above are the only way in.
do $$
declare
    schema_name text;
begin
    for schema_name in
        select nspname from pg_namespace
        where nspname in ('ml', 'marts', 'staging', 'intermediate', 'raw_supabase', 'raw_mixpanel')
    loop
        execute format('revoke all on schema %I from public, anon, authenticated', schema_name);
        execute format('revoke all on all tables in schema %I from public, anon, authenticated', schema_name);
        execute format('revoke all on all sequences in schema %I from public, anon, authenticated', schema_name);
        execute format('revoke all on all functions in schema %I from public, anon, authenticated', schema_name);
        execute format(
            'alter default privileges in schema %I revoke all on tables from public, anon, authenticated', schema_name
        );
        execute format(
            'alter default privileges in schema %I revoke all on sequences from public, anon, authenticated',
            schema_name
        );
        execute format(
            'alter default privileges in schema %I revoke all on functions from public, anon, authenticated',
            schema_name
        );
    end loop;
end
$$;

-- Nobody but the owner creates objects in public, so nothing there can pose as an object a function looks up by
-- name (Supabase's recommendation; PostgreSQL 15 and later already withhold CREATE from PUBLIC). A role that may
-- not revoke it (public isn't its own) only gets a notice: the API functions qualify every name anyway.
do $$
begin
    revoke create on schema public from public, anon, authenticated;
exception
    when insufficient_privilege then
        raise notice 'could not revoke CREATE on schema public: %', sqlerrm;
end
$$;

-- PostgREST caches the functions it serves: have it reload them (no-op where no PostgREST listens).
notify pgrst, 'reload schema';
