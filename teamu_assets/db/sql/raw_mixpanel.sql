-- Mixpanel raw export events, as loaded by teamu_assets.ingest (one row per accepted event).
create schema if not exists raw_mixpanel;

create table if not exists raw_mixpanel.events (
    insert_id    text not null,
    event        text not null,
    distinct_id  text not null,
    event_time   timestamptz not null,
    properties   jsonb not null,
    source_file  text not null,
    loaded_at    timestamptz not null default now(),
    -- Mixpanel's own deduplication key: an event is the same when all four agree.
    primary key (insert_id, event, distinct_id, event_time)
);
create index if not exists events_loaded_at_idx on raw_mixpanel.events (loaded_at);
create index if not exists events_event_time_idx on raw_mixpanel.events (event_time);
-- One user's events, as the online updater reads them (marts.user_features_live filters stg_mixpanel__events.user_id):
-- the expression is dbt's text_to_bigint('distinct_id') verbatim, so a filter on that column reaches this index
-- instead of every event in the incremental lookback window (tests/integration/test_realtime.py checks the plan).
create index if not exists events_user_id_idx on raw_mixpanel.events
    ((case when distinct_id ~ '^\s*[0-9]{1,18}(\.0*)?\s*$' then btrim(distinct_id)::numeric::bigint end));

-- Lines that could not be accepted, kept verbatim with the reason.
create table if not exists raw_mixpanel.events_quarantine (
    source_file     text not null,
    line_number     integer not null,
    raw_line        text not null,
    reason          text not null,
    quarantined_at  timestamptz not null default now(),
    primary key (source_file, line_number)
);

-- One row per export file loaded, so no line is loaded twice, with counts over all of the file read so far
-- that reconcile: lines_read = loaded + duplicates + quarantined.
create table if not exists raw_mixpanel.loaded_files (
    source_file  text primary key,
    sha256       text not null,
    lines_read   integer not null,
    loaded       integer not null,
    duplicates   integer not null,
    quarantined  integer not null,
    loaded_at    timestamptz not null default now(),
    check (lines_read = loaded + duplicates + quarantined)
);
-- What was read of each file, so a file that grew is read on from there and one that changed is an error
-- (teamu_assets/ingest/loader.py). Added after the table: a row of an older loader has NULL sizes, and its
-- sha256 covers the whole file.
alter table raw_mixpanel.loaded_files
    -- bytes of the file read so far; sha256 is theirs
    add column if not exists size_bytes bigint,
    -- the file's mtime when it was read: a folder scan hashes only files whose size or mtime moved
    add column if not exists mtime_ns bigint,
    -- physical lines read so far, a last line without newline included
    add column if not exists line_count integer,
    -- length of that last line when it is no event yet (quarantined or blank): read again as the file grows
    add column if not exists open_tail_bytes integer not null default 0,
    add column if not exists updated_at timestamptz;
