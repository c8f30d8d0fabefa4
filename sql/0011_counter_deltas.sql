-- Append-only registration counters (issue #19): a change of a webinar's registrations
-- is an inserted row here instead of an update of one of webinar_counters' shard rows.
-- An insert holds no row lock that another writer waits for, so a join storm no longer
-- queues on 8 rows per webinar and two batches of entries (eventlive.track_access_batch)
-- cannot deadlock on them. Readers sum webinar_counters and these rows in one statement
-- (api.access_stats); housekeeping folds them into webinar_counters from time to time
-- (eventlive.fold_counter_deltas: one delete ... returning into an upsert, so a reader
-- sees a delta either here or in the counter, never both, never neither).
-- Written by the trigger on registrations (functions/10_counters.sql), as whoever writes
-- the registration: the api functions' owner, or service_role. Staff read these rows as
-- they read webinar_counters (policies/webinar_counter_deltas.sql).

-- Creating a table with a foreign key locks the referenced table: give up rather than
-- queue the live hot path behind this migration.
set local lock_timeout = '5s';

create table eventlive.webinar_counter_deltas (
    webinar_id bigint not null references eventlive.webinars (id) on delete cascade,
    id bigint generated always as identity,
    registrations integer not null,
    unique_viewers integer not null,
    -- by webinar first: the readers' range and the cascade from webinars
    primary key (webinar_id, id)
);
comment on table eventlive.webinar_counter_deltas is 'Changes of a webinar''s registration and unique-viewer counts not yet folded into webinar_counters (append-only; summed on read).';
alter table eventlive.webinar_counter_deltas enable row level security;
grant select on eventlive.webinar_counter_deltas to authenticated;
grant select, insert, update, delete on eventlive.webinar_counter_deltas to service_role;

comment on table eventlive.webinar_counters is 'Per-webinar registration and unique-viewer counts folded in from webinar_counter_deltas by housekeeping (shard 0; shards 1-7 hold what the trigger counted before sql/0011); readers add the deltas not yet folded.';
