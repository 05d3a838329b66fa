-- Interactions the sources claim but the marts leave out (unknown user or post, own post): reported as a
-- warning with their counts on every build, never a failure (the raw data is the app's, not ours to fix).
{{ config(severity='warn') }}

select source, kind, rejection_reason, rejected_count
from {{ ref('int_interactions_rejected') }}
