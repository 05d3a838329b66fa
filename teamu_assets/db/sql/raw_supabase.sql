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

-- A project's team. The owner (projects.user_id) belongs to it whether or not a row says so; the generator
-- writes one with role 'owner'.
create table if not exists raw_supabase.project_members (
    project_id  bigint not null references raw_supabase.projects (project_id),
    user_id     bigint not null references raw_supabase.users (user_id),
    role        text not null default 'member',
    joined_at   timestamptz not null,
    primary key (project_id, user_id)
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
-- The online updater (marts.user_features_live) reads one user's rows.
create index if not exists votes_user_id_idx on raw_supabase.votes (user_id);
create index if not exists comments_user_id_idx on raw_supabase.comments (user_id);
create index if not exists projects_user_id_idx on raw_supabase.projects (user_id);
create index if not exists posts_user_id_idx on raw_supabase.posts (user_id);
-- A user's teams.
create index if not exists project_members_user_id_idx on raw_supabase.project_members (user_id);
