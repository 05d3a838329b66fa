{{ config(materialized='view') }}
-- One row per project: its team. A view, not a table: it is small (one row per project, read one team or the
-- few most active teams at a time) and always current, where a table would wait for the next full refresh (the
-- incremental refresh runs only the incremental models).
-- The owner (projects.user_id) is a member whatever project_members says, with role 'owner'; members the
-- app recorded twice count once; rows naming an unknown user or project are left out.

with projects as (
    select * from {{ ref('stg_supabase__projects') }}
),

claimed as (
    select project_id, user_id, coalesce(role, 'member') as role, joined_at
    from {{ ref('stg_supabase__project_members') }}
    union all
    select project_id, user_id, 'owner' as role, created_at as joined_at
    from projects
),

members as (
    select distinct on (claimed.project_id, claimed.user_id)
        claimed.project_id,
        claimed.user_id,
        case when claimed.user_id = projects.user_id then 'owner' else claimed.role end as role,
        claimed.joined_at,
        claimed.user_id = projects.user_id as is_owner
    from claimed
    join projects on projects.project_id = claimed.project_id
    join {{ ref('stg_supabase__users') }} as users on users.user_id = claimed.user_id
    order by claimed.project_id, claimed.user_id, claimed.joined_at
)

select
    projects.project_id,
    projects.title,
    projects.user_id as owner_id,
    array_agg(members.user_id order by members.is_owner desc, members.joined_at, members.user_id) as member_ids,
    array_agg(members.role order by members.is_owner desc, members.joined_at, members.user_id) as member_roles,
    count(*) as member_count,
    projects.created_at
from projects
join members on members.project_id = projects.project_id
group by projects.project_id, projects.title, projects.user_id, projects.created_at
