-- The ml schema: model registry, evaluations and (created from Python, because their vector dimension is a
-- setting) the embedding tables ml.user_embeddings / ml.post_embeddings, see teamu_assets/db/embeddings.py.
-- The serving functions live in serving_functions.sql: they read the dbt marts, so they are installed after dbt.
create schema if not exists ml;

create table if not exists ml.model_versions (
    model_version   text primary key,
    trained_at      timestamptz not null default now(),
    params          jsonb not null default '{}'::jsonb,
    artifact_path   text,
    promoted        boolean not null default false
);

-- One row per evaluation run; a model may be evaluated again (new data, new baselines).
create table if not exists ml.model_evaluations (
    evaluation_id   bigint generated always as identity primary key,
    model_version   text not null references ml.model_versions (model_version) on delete cascade,
    evaluated_at    timestamptz not null default now(),
    metrics         jsonb not null,
    baselines       jsonb not null default '{}'::jsonb,
    segments        jsonb not null default '{}'::jsonb,
    promoted        boolean not null default false,
    report_path     text,
    -- The promotion gate's decision: {"promote", "rule", "reason", "figures"} (teamu_assets/evaluation/gate.py).
    gate            jsonb not null default '{}'::jsonb
);
-- Databases created before the gate was recorded.
alter table ml.model_evaluations add column if not exists gate jsonb not null default '{}'::jsonb;

create index if not exists model_evaluations_model_version_idx
    on ml.model_evaluations (model_version, evaluated_at desc);

-- The popularity fallback's decay, one row per choice: the evaluation chooses it on validation every time it runs
-- (teamu_assets/evaluation/fallback.py), and ml.recommend_posts' fallback reads the newest row (1.5 before the
-- first). validation: {"decay", "k", "users", "recalls": {decay: validation recall@k}}.
create table if not exists ml.popularity_fallback (
    choice_id       bigint generated always as identity primary key,
    chosen_at       timestamptz not null default now(),
    model_version   text references ml.model_versions (model_version) on delete set null,
    decay           double precision not null check (decay >= 0 and decay <= 10),
    validation      jsonb not null default '{}'::jsonb
);

-- Post ideas for teams (teamu_assets/ideas), best first: the app shows a team its rows. A team's rows are
-- replaced together, in one transaction, whenever its ideas are generated again.
create table if not exists ml.post_ideas (
    project_id      bigint not null,
    rank            integer not null check (rank >= 1),
    title           text not null,
    description     text not null,
    -- Engagements the idea is expected to draw from the team's audience (teamu_assets/ideas/rank.py).
    score           double precision not null,
    -- The successful posts nearest the idea: [{"post_id", "title", "similarity", "views", "upvotes"}].
    reasons         jsonb not null default '[]'::jsonb,
    generator       text not null,
    model_version   text not null,
    generated_at    timestamptz not null,
    primary key (project_id, rank)
);
