-- What access_stats reads, so that it never scans a webinar's presence rows: the
-- presence minutes (written by eventlive.record_presence_minute) and the registration
-- counters (kept by the trigger in functions/10_counters.sql). Staff read both through RLS.

-- Creating a table with foreign keys locks the referenced tables: give up rather than
-- queue the live hot path behind this migration.
set local lock_timeout = '5s';

-- Concurrent viewers per minute. The first ping or track_access of a webinar in a new
-- minute counts the viewers seen within the presence window and stores the sample here
-- (one count per webinar per minute, whatever the number of viewers or admins).
create table eventlive.presence_minutes (
    webinar_id bigint not null references eventlive.webinars (id) on delete cascade,
    minute timestamptz not null,
    viewers integer not null check (viewers >= 0),
    primary key (webinar_id, minute)
);
comment on table eventlive.presence_minutes is 'Concurrent viewers of a webinar sampled once per minute (the access_stats timeline).';
alter table eventlive.presence_minutes enable row level security;
grant select on eventlive.presence_minutes to authenticated;
grant select, insert, update, delete on eventlive.presence_minutes to service_role;

-- Registration and unique-viewer counts, kept by a trigger on registrations. Split in
-- 8 shards per webinar (by user) so that a join storm on one webinar does not queue on
-- one counter row; access_stats sums at most 8 rows.
create table eventlive.webinar_counters (
    webinar_id bigint not null references eventlive.webinars (id) on delete cascade,
    shard smallint not null check (shard between 0 and 7),
    registrations bigint not null default 0,
    unique_viewers bigint not null default 0,
    primary key (webinar_id, shard)
);
comment on table eventlive.webinar_counters is 'Per-webinar registration and unique-viewer counts, sharded 8 ways by user to spread write contention.';
alter table eventlive.webinar_counters enable row level security;
grant select on eventlive.webinar_counters to authenticated;
grant select, insert, update, delete on eventlive.webinar_counters to service_role;
