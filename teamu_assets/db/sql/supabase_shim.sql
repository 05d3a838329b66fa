-- What a Supabase project provides before any migration runs, for servers that aren't Supabase (the embedded one,
-- any other TEAMU_DATABASE_URL): the API roles, the auth.uid() / auth.role() / auth.jwt() functions PostgREST's
-- requests are checked with, and Supabase's grants on schema public. NOT a migration: a real Supabase project
-- already has all of it, and this file then changes nothing (every step runs only where its object is missing).
-- Applied by `teamu db start` (teamu_assets/db/bootstrap.py) before supabase/migrations/*.sql. Idempotent.
--
-- Acting as a signed-in user the way PostgREST does, inside a transaction:
--     set local role authenticated;
--     set local request.jwt.claims = '{"sub": "42", "role": "authenticated"}';

-- Roles, as Supabase creates them: no login (PostgREST logs in as another role and switches to one of these per
-- request), no inheriting, and service_role (the backend's key) bypasses row-level security. Roles belong to the
-- server, not the database, so another database on the same server may have created them already.
do $$
declare
    role_name text;
begin
    foreach role_name in array array['anon', 'authenticated', 'service_role'] loop
        continue when exists (select 1 from pg_roles where rolname = role_name);
        begin
            execute format(
                'create role %I nologin noinherit%s',
                role_name,
                case when role_name = 'service_role' then ' bypassrls' else '' end
            );
        exception
            -- Created at the same moment by a session preparing another database.
            when duplicate_object or unique_violation then null;
            when insufficient_privilege then
                raise exception 'creating role % needs the CREATEROLE privilege (BYPASSRLS for service_role)',
                    role_name
                    using hint = 'Create the roles anon, authenticated and service_role (NOLOGIN) as a superuser, '
                        'or run teamu db start with a role that may.';
        end;
    end loop;
end
$$;

-- The auth schema and its functions as Supabase defines them (same names, types and results): code
-- tested here behaves as it will there. auth.uid() returns a uuid, as Supabase Auth's user ids are; a `sub` that
-- isn't one is an error in it. (Teamu's API reads `sub` itself, see supabase/migrations.) Only where auth.uid()
-- is missing: on Supabase the schema belongs to Supabase and must not be touched.
do $$
begin
    if to_regprocedure('auth.uid()') is not null then
        return;
    end if;

    create schema if not exists auth;

    create or replace function auth.jwt() returns jsonb
    language sql stable
    as $fn$
        select coalesce(
            nullif(current_setting('request.jwt.claim', true), ''),
            nullif(current_setting('request.jwt.claims', true), '')
        )::jsonb
    $fn$;

    create or replace function auth.uid() returns uuid
    language sql stable
    as $fn$
        select coalesce(
            nullif(current_setting('request.jwt.claim.sub', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
    $fn$;

    create or replace function auth.role() returns text
    language sql stable
    as $fn$
        select coalesce(
            nullif(current_setting('request.jwt.claim.role', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
        )::text
    $fn$;

    grant usage on schema auth to anon, authenticated, service_role;
    grant execute on function auth.jwt(), auth.uid(), auth.role() to anon, authenticated, service_role;

    -- Supabase's grants on schema public: every table, function and sequence that `postgres` (here: the role
    -- running this file) creates there is open to the API roles unless revoked. Reproduced so that a missing
    -- revoke fails here as it would there.
    grant usage on schema public to anon, authenticated, service_role;
    alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
    alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
    alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
end
$$;
