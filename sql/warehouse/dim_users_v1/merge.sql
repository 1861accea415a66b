-- Users with events in the interval are recomputed from all their events, so reloading an hour
-- (or loading hours out of order) gives the same rows. Latest non-null value wins per attribute.
DELETE FROM dim_users_v1
WHERE user_key IN (
    SELECT DISTINCT user_key
    FROM fact_events_v1
    WHERE ts >= {interval_start} AND ts < {interval_end}
);

INSERT INTO dim_users_v1 (
    user_key, user_id, anonymous_id, first_seen_at, last_seen_at, country, device, plan, events
)
SELECT
    user_key,
    MAX(CASE WHEN user_id_rank = 1 THEN user_id END) AS user_id,
    MAX(CASE WHEN anonymous_id_rank = 1 THEN anonymous_id END) AS anonymous_id,
    MIN(ts) AS first_seen_at,
    MAX(ts) AS last_seen_at,
    MAX(CASE WHEN country_rank = 1 THEN country END) AS country,
    MAX(CASE WHEN device_rank = 1 THEN device END) AS device,
    MAX(CASE WHEN plan_rank = 1 THEN plan END) AS plan,
    COUNT(*) AS events
FROM (
    SELECT
        attributes.*,
        ROW_NUMBER() OVER (
            PARTITION BY user_key ORDER BY CASE WHEN user_id IS NULL THEN 1 ELSE 0 END, ts DESC, event_id
        ) AS user_id_rank,
        ROW_NUMBER() OVER (
            PARTITION BY user_key ORDER BY CASE WHEN anonymous_id IS NULL THEN 1 ELSE 0 END, ts DESC, event_id
        ) AS anonymous_id_rank,
        ROW_NUMBER() OVER (
            PARTITION BY user_key ORDER BY CASE WHEN country IS NULL THEN 1 ELSE 0 END, ts DESC, event_id
        ) AS country_rank,
        ROW_NUMBER() OVER (
            PARTITION BY user_key ORDER BY CASE WHEN device IS NULL THEN 1 ELSE 0 END, ts DESC, event_id
        ) AS device_rank,
        ROW_NUMBER() OVER (
            PARTITION BY user_key ORDER BY CASE WHEN plan IS NULL THEN 1 ELSE 0 END, ts DESC, event_id
        ) AS plan_rank
    FROM (
        SELECT
            e.event_id,
            e.user_key,
            e.user_id,
            e.anonymous_id,
            e.ts,
            JSON_EXTRACT_PATH_TEXT(e.context, 'country') AS country,
            JSON_EXTRACT_PATH_TEXT(e.context, 'device') AS device,
            CASE
                WHEN e.event_type = 'identify' THEN JSON_EXTRACT_PATH_TEXT(e.properties, 'traits', 'plan')
            END AS plan
        FROM fact_events_v1 AS e
        WHERE e.user_key IN (
            SELECT DISTINCT user_key
            FROM fact_events_v1
            WHERE ts >= {interval_start} AND ts < {interval_end}
        )
    ) AS attributes
) AS ranked
GROUP BY user_key;
