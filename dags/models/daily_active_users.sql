-- Daily active users and events.
select day, count(distinct user_id) as users, count(*) as events
from {{ ref("stg_events") }}
group by day
