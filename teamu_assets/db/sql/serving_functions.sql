-- The serving path: recommendations straight from Postgres. The platform calls these functions as the role that
-- owns them; the app reaches them only through the SECURITY DEFINER API in public
-- (supabase/migrations/*_teamu_api_security.sql), so nobody else may execute them (revoked at the end of this file).
-- Reads ml.user_embeddings / ml.post_embeddings and the dbt marts (interactions, post_features,
-- user_features) when called, not when created: installed once at bootstrap (teamu_assets.db.recommend.install),
-- which records this file's digest in ml.installed_sql; later runs compare the digest instead of re-installing.
-- Idempotent. Tables are schema-qualified. Every function has a fixed search_path (a caller's path must not decide
-- what a name means; Supabase's Security Advisor flags those that don't): pg_catalog for the built-ins, then the
-- schemas pgvector's vector type and <#> operator may live in (public locally, extensions on Supabase; a schema
-- that doesn't exist is skipped), and pg_temp last, so a caller's temporary table or type can't stand in for them.

-- What teamu_assets.db.recommend.install installed, by digest: a changed file is installed again, an unchanged one
-- is left alone.
create table if not exists ml.installed_sql (
    name            text primary key,
    digest          text not null,
    installed_at    timestamptz not null default now()
);

-- Great-circle distance in km between two points in degrees; NULL when either point is unknown.
create or replace function ml.haversine_km(
    lat1 double precision, lon1 double precision, lat2 double precision, lon2 double precision
) returns double precision
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
return 2 * 6371.0088 * asin(least(1.0, sqrt(
    sin(radians(lat2 - lat1) / 2) ^ 2
    + cos(radians(lat1)) * cos(radians(lat2)) * sin(radians(lon2 - lon1) / 2) ^ 2
)));

-- Local posts are meant for people nearby: one is shown only within p_radius_km of the viewer's location, and
-- never to a viewer (or next to a post) without a location. Non-local posts are shown everywhere.
-- For callers outside the serving functions (tests, benchmarks); those write it out, see ml.recommend_posts.
create or replace function ml.local_post_visible(
    is_local boolean,
    post_latitude double precision, post_longitude double precision,
    viewer_latitude double precision, viewer_longitude double precision,
    radius_km double precision
) returns boolean
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
return not coalesce(is_local, false)
    or coalesce(ml.haversine_km(viewer_latitude, viewer_longitude, post_latitude, post_longitude) <= radius_km, false);

-- hnsw.ef_search for a page of p_count posts: the HNSW scan's candidate list, of which the page is the best. 200
-- (bench/bench_serving.py's choice for pages of 10) up to a page of 20, then 10 candidates per post requested, up
-- to pgvector's maximum of 1000: at 200 a page of 50 held 0.70 of the exact top 50 on one Last.fm model
-- (docs/BENCHMARKS.md, "Real data"). The serving functions set it for the call only (their SET clause scopes
-- set_config to the call).
create or replace function ml.hnsw_ef_search(p_count integer) returns integer
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
return least(1000, greatest(200, 10 * p_count));

-- Why VOLATILE (the default) and not STABLE: a STABLE function runs its queries with the caller's snapshot, taken
-- before a concurrent full refresh (teamu_assets/db/embeddings.py) commits its table swap; such a query would read
-- the swapped-in table with that older snapshot and find it empty. A VOLATILE one takes a fresh snapshot per query,
-- after its locks are granted.
-- hnsw.iterative_scan: when the filters reject most of the nearest posts, the HNSW scan goes on fetching until
-- p_count rows pass (up to hnsw.max_scan_tuples); relaxed_order is fast and the final ORDER BY restores the order.
-- Should the scan still come up short (a user who has seen most posts), an exact scan takes over, so p_count rows
-- come back whenever p_count eligible posts exist.
-- hnsw.ef_search 200: on 100k clustered 512-d posts (bench/bench_serving.py) it gives recall@10 ~0.96 at p95
-- ~6 ms; 100 gives ~0.90. A longer page gets a longer candidate list (ml.hnsw_ef_search).
-- source: 'model' or 'popularity fallback', so a caller can tell a personal ranking from the fallback (whose
-- scores are on another scale). It came after post_id and score; a function's result type can't be changed in
-- place, so an older definition without it is dropped first. Without CASCADE: should a view or a SQL-standard-body
-- function depend on the old columns, this fails loudly instead of dropping them.
do $$
begin
    if pg_get_function_result(to_regprocedure('ml.recommend_posts(bigint, integer, double precision)'))
        <> 'TABLE(post_id bigint, score real, source text)' then
        drop function ml.recommend_posts(bigint, integer, double precision);
    end if;
end
$$;

-- The local-post rule is ml.local_post_visible written out in each query rather than called: a function with a
-- fixed search_path is never inlined, and calling it once per candidate row made the scans of every post (the
-- popularity fallback, the exact scan) about 60% slower at 100k posts.
create or replace function ml.recommend_posts(
    p_user_id bigint,
    p_count integer default 20,
    p_local_radius_km double precision default 50
) returns table (post_id bigint, score real, source text)
language plpgsql
volatile
security invoker
set hnsw.iterative_scan = 'relaxed_order'
set hnsw.ef_search = '200'
set search_path = pg_catalog, extensions, public, pg_temp
as $$
#variable_conflict use_column
declare
    v_embedding vector;
    v_latitude double precision;
    v_longitude double precision;
    v_post_ids bigint[];
    v_scores real[];
    v_pending bigint[];
    v_downvoted bigint[];
    v_excluded bigint[];
    v_decay double precision;
    v_blank boolean;
begin
    if p_user_id is null then
        raise exception 'ml.recommend_posts: p_user_id must not be null' using errcode = 'invalid_parameter_value';
    end if;
    if p_count is null or p_count < 1 or p_count > 1000 then
        raise exception 'ml.recommend_posts: p_count must be between 1 and 1000, got %', coalesce(p_count::text, 'null')
            using errcode = 'invalid_parameter_value';
    end if;
    if p_local_radius_km is null or p_local_radius_km < 0 or p_local_radius_km = 'NaN' then
        raise exception 'ml.recommend_posts: p_local_radius_km must be a number >= 0, got %',
            coalesce(p_local_radius_km::text, 'null') using errcode = 'invalid_parameter_value';
    end if;

    -- Before any model is promoted the embedding tables may not exist (their dimension comes from the first
    -- promoted model): everyone gets the popularity fallback. PL/pgSQL plans a statement when it first runs
    -- it, so a skipped select on a missing table is no error.
    if to_regclass('ml.user_embeddings') is not null and to_regclass('ml.post_embeddings') is not null then
        select ue.embedding into v_embedding from ml.user_embeddings ue where ue.user_id = p_user_id;
    end if;
    -- Blank: nothing for the query tower to read (no history or activity, no profile text, passions or location;
    -- teamu_assets.model.features.UserFeatureTable.blank, the same rule). The tower reads no user id, so every
    -- blank user has one vector, a global ranking with nothing personal in it: they get the fallback, the
    -- product's own global ranking, chosen on validation. The evaluation ranks them so too (evaluate_embeddings'
    -- fallback_users), so the gate judges the model where it personalises.
    select uf.latitude, uf.longitude,
           coalesce(cardinality(uf.recent_post_ids), 0) = 0
           and coalesce(uf.viewed_count, 0) = 0 and coalesce(uf.upvoted_count, 0) = 0
           and coalesce(uf.commented_count, 0) = 0
           and not coalesce(uf.bio ~ '\S', false)
           and not exists (
               select from unnest(coalesce(uf.passions, '{}') || coalesce(uf.project_titles, '{}')
                                  || coalesce(uf.created_post_titles, '{}')) as t(value)
               where t.value ~ '\S'
           )
           and not coalesce(uf.latitude between -90 and 90 and uf.longitude between -180 and 180, false)
    into v_latitude, v_longitude, v_blank
    from marts.user_features uf where uf.user_id = p_user_id;
    -- Posts the user engaged with that marts.interactions doesn't hold yet, as the online updater (`teamu
    -- realtime`, teamu_assets/realtime) last saw them: excluded like the marts' interactions, so an engagement
    -- stops its post from being recommended within the second. The table exists once the updater was installed.
    if to_regclass('ml.user_online_state') is not null then
        select s.pending_post_ids into v_pending from ml.user_online_state s where s.user_id = p_user_id;
    end if;
    -- Posts whose latest vote by the user is a downvote: "not for me", excluded like an engagement, and so even
    -- where no view of the post was ever tracked (an ad blocker drops Mixpanel's calls). Read from the app's own
    -- table (indexed by user), so it counts from the moment it is cast. A user's latest vote on a post is the one
    -- that stands.
    if to_regclass('raw_supabase.votes') is not null then
        select array_agg(latest.post_id) into v_downvoted
        from (
            select distinct on (v.post_id) v.post_id, v.value
            from raw_supabase.votes v
            where v.user_id = p_user_id
            order by v.post_id, v.created_at desc, v.vote_id desc
        ) latest
        where latest.value < 0;
    end if;
    v_excluded := coalesce(v_pending, '{}') || coalesce(v_downvoted, '{}');

    -- An engagement the marts don't hold yet is history: the online updater embedded the user with it.
    if v_embedding is null or (coalesce(v_blank, false) and coalesce(cardinality(v_pending), 0) = 0) then
        -- Popularity fallback for users the model hasn't embedded yet (new sign-ups), for blank users (above),
        -- and for everyone while no model is promoted (the promotion gate refused every candidate so far):
        -- engaged users (distinct people
        -- who viewed, upvoted or commented: one who came back often counts once) divided by
        -- (1 + age in days)^decay. The decay is the one the latest evaluation chose on
        -- validation (ml.popularity_fallback; 0 where people engage with a catalogue's hits, steeper where
        -- they engage with what is new), 1.5 before any. Same exclusions as the personal ranking.
        if to_regclass('ml.popularity_fallback') is not null then
            select c.decay into v_decay from ml.popularity_fallback c order by c.chosen_at desc, c.choice_id desc limit 1;
        end if;
        v_decay := coalesce(v_decay, 1.5);
        return query
        select pf.post_id,
               (coalesce(pf.engaged_user_count, 0)::double precision
                / power(1 + greatest(extract(epoch from now() - pf.created_at), 0) / 86400, v_decay))::real as score,
               'popularity fallback'::text as source
        from marts.post_features pf
        where pf.user_id is distinct from p_user_id
          -- ml.local_post_visible, written out (see the note above ml.recommend_posts)
          and (not coalesce(pf.is_local, false) or 2 * 6371.0088 * asin(least(1.0, sqrt(
                sin(radians(pf.latitude - v_latitude) / 2) ^ 2
                + cos(radians(v_latitude)) * cos(radians(pf.latitude)) * sin(radians(pf.longitude - v_longitude) / 2) ^ 2
              ))) <= p_local_radius_km)
          and not exists (select 1 from marts.interactions i where i.user_id = p_user_id and i.post_id = pf.post_id)
          and pf.post_id <> all(v_excluded)
        order by 2 desc, pf.post_id
        limit p_count;
        return;
    end if;

    -- Approximate nearest posts by inner product, which is the trained score itself: content cosine / temperature
    -- + appetite x freshness + quality (the towers write each term into the vectors; teamu_assets/model/towers.py).
    perform set_config('hnsw.ef_search', ml.hnsw_ef_search(p_count)::text, true);
    with nearest as materialized (
        select pe.post_id, pe.embedding <#> v_embedding as distance
        from ml.post_embeddings pe
        join marts.post_features pf on pf.post_id = pe.post_id
        where pf.user_id is distinct from p_user_id
          -- ml.local_post_visible, written out (see the note above ml.recommend_posts)
          and (not coalesce(pf.is_local, false) or 2 * 6371.0088 * asin(least(1.0, sqrt(
                sin(radians(pf.latitude - v_latitude) / 2) ^ 2
                + cos(radians(v_latitude)) * cos(radians(pf.latitude)) * sin(radians(pf.longitude - v_longitude) / 2) ^ 2
              ))) <= p_local_radius_km)
          and not exists (select 1 from marts.interactions i where i.user_id = p_user_id and i.post_id = pe.post_id)
          and pe.post_id <> all(v_excluded)
        order by pe.embedding <#> v_embedding
        limit p_count
    )
    select array_agg(n.post_id order by n.distance, n.post_id), array_agg((-n.distance)::real order by n.distance, n.post_id)
    into v_post_ids, v_scores
    from nearest n;

    if coalesce(cardinality(v_post_ids), 0) < p_count then
        -- Exact: the score expression matches no index, so this scans and sorts every eligible post.
        return query
        select pe.post_id, (-(pe.embedding <#> v_embedding))::real as score, 'model'::text as source
        from ml.post_embeddings pe
        join marts.post_features pf on pf.post_id = pe.post_id
        where pf.user_id is distinct from p_user_id
          -- ml.local_post_visible, written out (see the note above ml.recommend_posts)
          and (not coalesce(pf.is_local, false) or 2 * 6371.0088 * asin(least(1.0, sqrt(
                sin(radians(pf.latitude - v_latitude) / 2) ^ 2
                + cos(radians(v_latitude)) * cos(radians(pf.latitude)) * sin(radians(pf.longitude - v_longitude) / 2) ^ 2
              ))) <= p_local_radius_km)
          and not exists (select 1 from marts.interactions i where i.user_id = p_user_id and i.post_id = pe.post_id)
          and pe.post_id <> all(v_excluded)
        order by 2 desc, pe.post_id
        limit p_count;
        return;
    end if;

    return query select r.post_id, r.score, 'model'::text
    from unnest(v_post_ids, v_scores) with ordinality as r(post_id, score, rank)
    order by r.rank;
end
$$;

comment on function ml.recommend_posts(bigint, integer, double precision) is
    'Top p_count posts for a user by embedding inner product (score, highest first; source ''model''), excluding '
    'posts the user engaged with or last voted down, the user''s own posts and local posts farther than '
    'p_local_radius_km; popularity (source ''popularity fallback'': engaged users / (1 + age in days)^decay, the '
    'decay chosen on validation, ml.popularity_fallback) for users without an embedding, and for everyone while no '
    'model is promoted.';

-- Posts like a given one (a post page's "more like this"): nearest by inner product, the post itself excluded,
-- local posts only near the given post's location. Empty for a post without an embedding yet.
create or replace function ml.similar_posts(
    p_post_id bigint,
    p_count integer default 20,
    p_local_radius_km double precision default 50
) returns table (post_id bigint, score real)
language plpgsql
volatile
security invoker
set hnsw.iterative_scan = 'relaxed_order'
set hnsw.ef_search = '200'
set search_path = pg_catalog, extensions, public, pg_temp
as $$
#variable_conflict use_column
declare
    v_embedding vector;
    v_latitude double precision;
    v_longitude double precision;
    v_post_ids bigint[];
    v_scores real[];
begin
    if p_post_id is null then
        raise exception 'ml.similar_posts: p_post_id must not be null' using errcode = 'invalid_parameter_value';
    end if;
    if p_count is null or p_count < 1 or p_count > 1000 then
        raise exception 'ml.similar_posts: p_count must be between 1 and 1000, got %', coalesce(p_count::text, 'null')
            using errcode = 'invalid_parameter_value';
    end if;
    if p_local_radius_km is null or p_local_radius_km < 0 or p_local_radius_km = 'NaN' then
        raise exception 'ml.similar_posts: p_local_radius_km must be a number >= 0, got %',
            coalesce(p_local_radius_km::text, 'null') using errcode = 'invalid_parameter_value';
    end if;

    if to_regclass('ml.post_embeddings') is null then
        return;  -- no model promoted yet (see ml.recommend_posts)
    end if;
    select pe.embedding into v_embedding from ml.post_embeddings pe where pe.post_id = p_post_id;
    if v_embedding is null then
        return;
    end if;
    select pf.latitude, pf.longitude into v_latitude, v_longitude
    from marts.post_features pf where pf.post_id = p_post_id;

    perform set_config('hnsw.ef_search', ml.hnsw_ef_search(p_count)::text, true);
    with nearest as materialized (
        select pe.post_id, pe.embedding <#> v_embedding as distance
        from ml.post_embeddings pe
        join marts.post_features pf on pf.post_id = pe.post_id
        where pe.post_id <> p_post_id
          -- ml.local_post_visible, written out (see the note above ml.recommend_posts)
          and (not coalesce(pf.is_local, false) or 2 * 6371.0088 * asin(least(1.0, sqrt(
                sin(radians(pf.latitude - v_latitude) / 2) ^ 2
                + cos(radians(v_latitude)) * cos(radians(pf.latitude)) * sin(radians(pf.longitude - v_longitude) / 2) ^ 2
              ))) <= p_local_radius_km)
        order by pe.embedding <#> v_embedding
        limit p_count
    )
    select array_agg(n.post_id order by n.distance, n.post_id), array_agg((-n.distance)::real order by n.distance, n.post_id)
    into v_post_ids, v_scores
    from nearest n;

    if coalesce(cardinality(v_post_ids), 0) < p_count then
        return query
        select pe.post_id, (-(pe.embedding <#> v_embedding))::real as score
        from ml.post_embeddings pe
        join marts.post_features pf on pf.post_id = pe.post_id
        where pe.post_id <> p_post_id
          -- ml.local_post_visible, written out (see the note above ml.recommend_posts)
          and (not coalesce(pf.is_local, false) or 2 * 6371.0088 * asin(least(1.0, sqrt(
                sin(radians(pf.latitude - v_latitude) / 2) ^ 2
                + cos(radians(v_latitude)) * cos(radians(pf.latitude)) * sin(radians(pf.longitude - v_longitude) / 2) ^ 2
              ))) <= p_local_radius_km)
        order by 2 desc, pe.post_id
        limit p_count;
        return;
    end if;

    return query select r.post_id, r.score from unnest(v_post_ids, v_scores) with ordinality as r(post_id, score, rank)
    order by r.rank;
end
$$;

comment on function ml.similar_posts(bigint, integer, double precision) is
    'Top p_count posts most like p_post_id by embedding inner product (score, highest first); local posts only '
    'within p_local_radius_km of that post.';

-- The API in public calls these as their owner; no other role needs them. Functions get EXECUTE for PUBLIC when
-- created, and `create or replace` keeps whatever they had, so this runs on every install.
revoke all on function ml.haversine_km(double precision, double precision, double precision, double precision)
    from public;
revoke all on function ml.local_post_visible(
    boolean, double precision, double precision, double precision, double precision, double precision
) from public;
revoke all on function ml.hnsw_ef_search(integer) from public;
revoke all on function ml.recommend_posts(bigint, integer, double precision) from public;
revoke all on function ml.similar_posts(bigint, integer, double precision) from public;
