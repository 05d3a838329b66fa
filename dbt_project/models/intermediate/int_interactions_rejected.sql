-- The interactions the sources claim that int_interactions leaves out, counted by source, kind and reason
-- (unknown_user, unknown_post, self_interaction). The warn-severity test interactions_rejected_are_reported
-- puts the counts into every `dbt build`'s output.
select
    source,
    kind,
    rejection_reason,
    count(*) as rejected_count,
    min(occurred_at) as first_occurred_at,
    max(occurred_at) as last_occurred_at
from {{ ref('int_interaction_candidates') }}
where rejection_reason is not null
group by source, kind, rejection_reason
