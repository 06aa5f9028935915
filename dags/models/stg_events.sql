{{ config(materialized="view") }}
-- Events as the models read them: one row per event, with its day.
select message_id, event, user_id, anonymous_id,
       substr(cast("timestamp" as text), 1, 10) as day
from events
