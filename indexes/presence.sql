-- Presence needs no index beyond its primary key (webinar_id, user_id), which every
-- hot-path statement uses (proved in tests/test_plans.py). Deliberately none on
-- last_seen_at: every heartbeat updates it, and an index on it would turn each HOT
-- update into an index insert (bench/ measures the HOT ratio). None on user_id either:
-- the planner then preferred it to the primary key for the heartbeat's lookup, it cost
-- an index write per entry, and only rare paths want it (a viewer reading their own
-- presence rows, deleting a user).

-- Give up after a minute of waiting for a lock (e.g. behind a long transaction) rather
-- than hang the migration; an abandoned build leaves an invalid index, which migrate rebuilds.
set lock_timeout = '1min';

drop index concurrently if exists eventlive.presence_user_id_idx;
