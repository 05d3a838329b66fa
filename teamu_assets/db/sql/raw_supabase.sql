-- The Teamu app's tables as Supabase holds them (the raw data contract in docs/DATA_CONTRACT.md).
-- Locally the synthetic generator fills them; on Supabase they live in `public` and are only read.
create schema if not exists raw_supabase;

create table if not exists raw_supabase.users (
    user_id     bigint primary key,
    username    text not null,
    bio         text,
    passions    text[],
    latitude    double precision,
    longitude   double precision,
    created_at  timestamptz not null,
    updated_at  timestamptz not null
);

create table if not exists raw_supabase.projects (
    project_id  bigint primary key,
    user_id     bigint not null references raw_supabase.users (user_id),
    title       text,
    created_at  timestamptz not null
);

create table if not exists raw_supabase.posts (
    post_id     bigint primary key,
    user_id     bigint not null references raw_supabase.users (user_id),
    title       text,
    description text,
    is_local    boolean not null default false,
    latitude    double precision,
    longitude   double precision,
    created_at  timestamptz not null,
    updated_at  timestamptz not null
);

create table if not exists raw_supabase.comments (
    comment_id  bigint primary key,
    post_id     bigint not null references raw_supabase.posts (post_id),
    user_id     bigint not null references raw_supabase.users (user_id),
    body        text,
    created_at  timestamptz not null
);

create table if not exists raw_supabase.votes (
    vote_id     bigint primary key,
    post_id     bigint not null references raw_supabase.posts (post_id),
    user_id     bigint not null references raw_supabase.users (user_id),
    value       smallint not null check (value in (-1, 1)),
    created_at  timestamptz not null
);

-- The sensors and incremental models read new rows by time.
create index if not exists comments_created_at_idx on raw_supabase.comments (created_at);
create index if not exists votes_created_at_idx on raw_supabase.votes (created_at);
create index if not exists posts_updated_at_idx on raw_supabase.posts (updated_at);
create index if not exists users_updated_at_idx on raw_supabase.users (updated_at);
