-- The online updater's part of the database (teamu_assets/realtime, `teamu realtime`), installed by the updater
-- on every start; idempotent. __SUPABASE_SCHEMA__ is replaced by the schema of the app's tables (raw_supabase
-- locally, public on Supabase). Everything lives in ml, whose grants (supabase/migrations) keep the API roles out.

-- The durable record of what the updater has still to apply: one row per user touched by a statement on the app
-- tables or on raw_mixpanel.events, written by the triggers below in the writer's own transaction, so a row
-- exists exactly when the data that queued it is committed. The updater deletes the rows it applies in the
-- transaction that writes their embeddings: a crash rolls both back (nothing lost, nothing applied twice), and
-- rows queued while it was down wait here (a lost NOTIFY loses nothing). A cursor over ids or times instead
-- would skip a row whose transaction took its id first and committed after a later one.
create table if not exists ml.online_queue (
    seq        bigint generated always as identity primary key,
    user_id    bigint not null,
    source     text not null,  -- the table whose write queued it, or 'resync'
    queued_at  timestamptz not null default statement_timestamp()
);

-- Progress of each updater: what it applied, as counters that only grow, in the same transactions.
create table if not exists ml.online_cursor (
    consumer          text primary key,
    last_seq          bigint not null default 0,  -- the highest queue row applied so far
    applied_rows      bigint not null default 0,  -- queue rows applied since the install
    applied_batches   bigint not null default 0,
    embedded_users    bigint not null default 0,  -- user vectors written
    last_applied_at   timestamptz,
    last_lag_seconds  double precision            -- queued -> applied, the oldest row of the last batch
);

-- What the updater last computed for each user it touched. pending_post_ids: posts the user engaged with that
-- marts.interactions does not hold yet; ml.recommend_posts excludes them with the marts' interactions, so an
-- engagement stops its post from being recommended as soon as the updater has seen it. features_as_of: the
-- time the features were read (everything committed before it is in them); feature_hash: theirs.
-- model_version: of the vector written, NULL when no model was served.
create table if not exists ml.user_online_state (
    user_id           bigint primary key,
    pending_post_ids  bigint[] not null default '{}',
    features_as_of    timestamptz not null,
    feature_hash      text not null,
    model_version     text,
    updated_at        timestamptz not null default now()
);

-- Queue the users of a statement's rows (transition table `touched`, with user_id). AFTER ... FOR EACH STATEMENT:
-- one insert per statement, however many rows it wrote. It must never fail or hold up the writer: every error is
-- caught and reported as a warning (the batch refresh still reads those rows; only their seconds-fresh update is
-- lost), and the insert takes no lock another writer holds (identity values are not transactional). NOTIFY is
-- delivered at commit, and only if the transaction commits. SECURITY DEFINER: the app's roles that write these
-- tables have no privilege on ml.
create or replace function ml.online_enqueue_users()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    begin
        insert into ml.online_queue (user_id, source)
        select distinct touched.user_id, tg_table_name::text from touched where touched.user_id is not null;
        if found then
            perform pg_notify('teamu_online', '');
        end if;
    exception when others then
        raise warning 'teamu online updater: rows of %.% not queued (%); the batch refresh still reads them',
            tg_table_schema, tg_table_name, sqlerrm;
    end;
    return null;
end
$$;

-- The same for Mixpanel events, whose user is distinct_id as text: read as stg_mixpanel__events reads it
-- (dbt's text_to_bigint); an anonymous id queues nothing.
create or replace function ml.online_enqueue_event_users()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    begin
        insert into ml.online_queue (user_id, source)
        select distinct btrim(touched.distinct_id)::numeric::bigint, tg_table_name::text
        from touched
        where touched.distinct_id ~ '^\s*[0-9]{1,18}(\.0*)?\s*$';
        if found then
            perform pg_notify('teamu_online', '');
        end if;
    exception when others then
        raise warning 'teamu online updater: rows of %.% not queued (%); the batch refresh still reads them',
            tg_table_schema, tg_table_name, sqlerrm;
    end;
    return null;
end
$$;

-- Every input of marts.user_features: interactions (votes, comments, Mixpanel events) and the profile, projects
-- and own posts. Separate triggers per event: a trigger with a transition table fires for one event only.
create or replace trigger teamu_online_insert after insert on __SUPABASE_SCHEMA__.votes
    referencing new table as touched for each statement execute function ml.online_enqueue_users();
create or replace trigger teamu_online_insert after insert on __SUPABASE_SCHEMA__.comments
    referencing new table as touched for each statement execute function ml.online_enqueue_users();
create or replace trigger teamu_online_insert after insert on __SUPABASE_SCHEMA__.users
    referencing new table as touched for each statement execute function ml.online_enqueue_users();
create or replace trigger teamu_online_update after update on __SUPABASE_SCHEMA__.users
    referencing new table as touched for each statement execute function ml.online_enqueue_users();
create or replace trigger teamu_online_insert after insert on __SUPABASE_SCHEMA__.projects
    referencing new table as touched for each statement execute function ml.online_enqueue_users();
create or replace trigger teamu_online_update after update on __SUPABASE_SCHEMA__.projects
    referencing new table as touched for each statement execute function ml.online_enqueue_users();
create or replace trigger teamu_online_insert after insert on __SUPABASE_SCHEMA__.posts
    referencing new table as touched for each statement execute function ml.online_enqueue_users();
create or replace trigger teamu_online_update after update on __SUPABASE_SCHEMA__.posts
    referencing new table as touched for each statement execute function ml.online_enqueue_users();
create or replace trigger teamu_online_insert after insert on raw_mixpanel.events
    referencing new table as touched for each statement execute function ml.online_enqueue_event_users();

-- The batch refresh never overwrites a newer online vector with an older one. Its upsert into
-- ml.user_embeddings (teamu_assets.db.embeddings) computes from marts.user_features, which holds the interactions
-- int_interactions had taken by its latest run (max(loaded_at)): everything committed before then, at least.
-- When the updater read this user's features after that moment, with the vector's model, its vector is the
-- newer one and the batch's update of the row is skipped. Should it have missed a write committed meanwhile,
-- that write queued the user again, and the updater writes once more. The updater's own writes set
-- teamu.online_write and always go through. Attached to the table by ml.attach_online_guard(), which the
-- updater calls again whenever a full refresh has swapped in a new table.
create or replace function ml.keep_newer_online_user_embedding()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_batch_as_of timestamptz;
begin
    if current_setting('teamu.online_write', true) = 'on' then
        return new;
    end if;
    if to_regclass('intermediate.int_interactions') is null then
        return new;
    end if;
    select coalesce(max(i.loaded_at), '-infinity') into v_batch_as_of from intermediate.int_interactions i;
    if exists (
        select 1 from ml.user_online_state s
        where s.user_id = new.user_id
            and s.model_version = new.model_version
            and s.features_as_of > v_batch_as_of
    ) then
        return null;
    end if;
    return new;
end
$$;

create or replace function ml.attach_online_guard()
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    -- Only where missing: creating a trigger waits for the table's writers.
    if to_regclass('ml.user_embeddings') is not null and not exists (
        select 1 from pg_trigger
        where tgrelid = to_regclass('ml.user_embeddings') and tgname = 'teamu_online_keep_newer'
    ) then
        create trigger teamu_online_keep_newer before update on ml.user_embeddings
            for each row execute function ml.keep_newer_online_user_embedding();
    end if;
end
$$;

select ml.attach_online_guard();

revoke all on function ml.online_enqueue_users() from public;
revoke all on function ml.online_enqueue_event_users() from public;
revoke all on function ml.keep_newer_online_user_embedding() from public;
revoke all on function ml.attach_online_guard() from public;
