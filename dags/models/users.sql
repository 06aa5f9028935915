-- One row per known user, with the first day they were seen.
select user_id, min(day) as first_seen, count(*) as events
from {{ ref("stg_events") }}
where user_id is not null
group by user_id
