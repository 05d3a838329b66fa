-- teamu_analyst: read-only access to the feature marts for analysts, nothing else. Idempotent.
--
-- A group role (NOLOGIN): people log in as their own users, members of it. To add one:
--     create role alice login password '...' in role teamu_analyst;   -- or: grant teamu_analyst to alice;
-- (On Supabase, run it in the SQL editor as `postgres`.) Members inherit the role's privileges.
--
-- Run it as the role that runs dbt: the default privileges below cover the tables that role creates later
-- (dbt rebuilds a table model by creating a new table, which would otherwise come without the grant).
-- What PostgreSQL grants to PUBLIC stays: CONNECT and TEMP on the database and USAGE on schema public, which
-- give no access to Teamu's data.

-- Each step only where needed: the embedded server's platform role (teamu_assets/db/server.py) may not create or
-- alter roles, and finds the role made already.
do $$
begin
    if not exists (select from pg_roles where rolname = 'teamu_analyst') then
        create role teamu_analyst nologin;
    end if;
exception
    -- Created at the same moment by another session.
    when duplicate_object or unique_violation then null;
end
$$;
do $$
begin
    if (select rolcanlogin from pg_roles where rolname = 'teamu_analyst') then
        alter role teamu_analyst nologin;
    end if;
end
$$;

-- The schema dbt builds into; created here so the grants can be given before the first dbt run.
create schema if not exists marts;
grant usage on schema marts to teamu_analyst;
revoke create on schema marts from teamu_analyst;
grant select on all tables in schema marts to teamu_analyst;
revoke insert, update, delete, truncate, references, trigger on all tables in schema marts from teamu_analyst;
alter default privileges in schema marts grant select on tables to teamu_analyst;

-- Raw, staging and intermediate data stay out of reach, also if someone granted access by hand earlier.
do $$
declare
    schema_name text;
begin
    for schema_name in
        select nspname from pg_namespace
        where nspname in ('raw_supabase', 'raw_mixpanel', 'staging', 'intermediate')
    loop
        execute format('revoke all on schema %I from teamu_analyst', schema_name);
        execute format('revoke all on all tables in schema %I from teamu_analyst', schema_name);
    end loop;
end
$$;
