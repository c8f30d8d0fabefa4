-- The live room's event log: every chat and Q&A write, every pushed notice,
-- is one row here with a per-webinar seq that has no gaps and follows commit order, so a
-- subscriber or a polling client that resumes "after seq N" never skips a row.
-- Writers go through eventlive.publish (functions/01_room.sql); the realtime hub reads
-- through eventlive.room_events_since as the internal role eventlive_hub.
-- eventlive: revises sha256 3fa6453e217755e1652ae5eb42d616709499034a273f7d345e578ec5b0190513
-- eventlive: revises sha256 8bf4445cc9739da889f04dd83a41915a881bf0bad4c7acd685ea1873fa4bf463
-- (Those texts also replaced realtime.messages wherever its comment said "Stand-in for
-- Supabase", which on an older Supabase project dropped Supabase's own table, and
-- created realtime.send where absent. 0001 now creates both stand-ins, where missing;
-- 0010 reshapes the project's own copy on databases that applied those texts.)

-- Catalog and role changes queue behind live transactions: give up rather than stall.
set local lock_timeout = '5s';

-- The hub's role: it reads every webinar's events (one read per tick per webinar, for
-- all its subscribers) and nothing else. No login: the shim logs in as authenticator
-- and switches to it, as it switches to the API roles. Roles are cluster-wide: create
-- it only if absent, and never let a JWT claim it (EVENTLIVE_JWT_ROLES does not list it).
do $roles$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'eventlive_hub') then
        create role eventlive_hub nologin noinherit;
    end if;
    if not pg_catalog.pg_has_role('authenticator', 'eventlive_hub', 'member') then
        grant eventlive_hub to authenticator;
    end if;
end
$roles$;
grant usage on schema eventlive to eventlive_hub;

-- The per-webinar counter behind seq. publish() updates this row in the writing
-- transaction: the row lock is held until commit, so the next writer of the same
-- webinar waits and reads the committed value. Hence seq order = commit order (a
-- reader never sees N+1 before N) and a rollback gives its number back (no gap).
-- Writers of one webinar serialise from publish() to commit: callers publish last.
create table eventlive.room_sequences (
    webinar_id bigint primary key references eventlive.webinars (id) on delete cascade,
    last_seq bigint not null default 0 check (last_seq >= 0)
);
comment on table eventlive.room_sequences is 'The last seq given in each webinar''s live room (its row lock orders publishers by commit).';
alter table eventlive.room_sequences enable row level security;
grant select on eventlive.room_sequences to eventlive_hub;
grant select, insert, update, delete on eventlive.room_sequences to service_role;

-- The event log. Keyed by (webinar_id, seq): the hub's "after seq N" read is one range
-- scan of the primary key. The foreign key to room_sequences (not webinars) checks a
-- row this transaction has just locked, so it adds no lock on the hot webinars row.
create table eventlive.room_events (
    webinar_id bigint not null references eventlive.room_sequences (webinar_id) on delete cascade,
    seq bigint not null check (seq > 0),
    channel text not null check (
        channel in ('chat', 'qa', 'admin')
        or channel ~ '^user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
    ),
    event text not null check (event ~ '^[a-z][a-z_]{0,63}$'),
    payload jsonb not null check (jsonb_typeof(payload) = 'object'),
    created_at timestamptz not null default now(),
    primary key (webinar_id, seq)
);
comment on table eventlive.room_events is 'Live-room events per webinar in commit order (seq gap-free): channel chat|qa|admin|user:<uuid>, event name, payload with seq at its top level.';
alter table eventlive.room_events enable row level security;
grant select on eventlive.room_events to eventlive_hub;
grant select, insert, update, delete on eventlive.room_events to service_role;
