-- Feature-flag exposures, one row per evaluation: the contract the experiment task reads.
select user_id,
       json_extract(properties, '$.flag') as experiment,
       json_extract(properties, '$.variant') as variant,
       "timestamp"
from events
where event = '$exposure'
