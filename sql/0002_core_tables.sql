-- The private schema behind the API. Tables live in eventlive, which no API role may
-- use directly except through the grants below and the RLS policies in policies/ (one
-- file per table); callable functions live in api. Functions are never executable by PUBLIC unless granted explicitly.

-- Creating a table with foreign keys locks the referenced tables: give up rather than
-- queue the live hot path behind this migration.
set local lock_timeout = '5s';

alter default privileges revoke execute on functions from public;

create schema if not exists eventlive;
comment on schema eventlive is 'Private tables of eventlive-rpc: reached through api functions, and directly only under RLS.';
grant usage on schema eventlive to authenticated, service_role;

create schema if not exists api;
comment on schema api is 'The exposed schema: every function here is an RPC endpoint of the shim.';
revoke all on schema api from public;
grant usage on schema api to anon, authenticated, service_role;
alter default privileges in schema api revoke execute on functions from public;

-- A webinar and its entry policy. Ids come from the platform (e.g. 149402), not from us.
create table eventlive.webinars (
    id bigint primary key,
    title text not null check (char_length(title) between 1 and 500),
    state text not null default 'live' check (state in ('draft', 'scheduled', 'live', 'ended')),
    entry text not null default 'auto' check (entry in ('auto', 'registered')),
    opens_at timestamptz,
    closes_at timestamptz,
    heartbeat_seconds integer not null default 120 check (heartbeat_seconds between 15 and 3600),
    track_seconds integer not null default 300 check (track_seconds between 30 and 86400),
    -- The minute of the latest presence_minutes sample: pings read it with the row they
    -- already fetch, so deciding "sample now?" costs no extra lookup.
    sampled_minute timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    check (opens_at is null or closes_at is null or closes_at > opens_at)
);
comment on table eventlive.webinars is 'Webinars with their state (draft|scheduled|live|ended), entry policy (auto|registered) and client call intervals.';
alter table eventlive.webinars enable row level security;
grant select on eventlive.webinars to authenticated;
grant select, insert, update, delete on eventlive.webinars to service_role;

-- Who runs a webinar: staff read its stats and participants.
create table eventlive.webinar_staff (
    webinar_id bigint not null references eventlive.webinars (id) on delete cascade,
    user_id uuid not null references auth.users (id) on delete cascade,
    role text not null default 'host' check (role in ('host', 'moderator')),
    created_at timestamptz not null default now(),
    primary key (webinar_id, user_id)
);
comment on table eventlive.webinar_staff is 'Staff (host|moderator) of a webinar: they may read its stats and participants.';
alter table eventlive.webinar_staff enable row level security;
grant select on eventlive.webinar_staff to authenticated;
grant select, insert, update, delete on eventlive.webinar_staff to service_role;

-- Keyed by (webinar_id, user_id) with no surrogate id: the incident queried a
-- registrations.id that never existed. Inserts are upserts, so concurrency cannot 409.
create table eventlive.registrations (
    webinar_id bigint not null references eventlive.webinars (id) on delete cascade,
    user_id uuid not null references auth.users (id) on delete cascade,
    source text not null check (source in ('self', 'auto', 'staff', 'service')),
    registered_at timestamptz not null default now(),
    -- Set by the first track_access: unique_viewers counts registrants who entered.
    first_entered_at timestamptz,
    primary key (webinar_id, user_id)
);
comment on table eventlive.registrations is 'Who is registered for which webinar; source says how (self|auto|staff|service); first_entered_at when they first entered.';
alter table eventlive.registrations enable row level security;
grant select on eventlive.registrations to authenticated;
grant select, insert, update, delete on eventlive.registrations to service_role;

-- Profile fields shown to staff in participant lists.
create table eventlive.profiles (
    user_id uuid primary key references auth.users (id) on delete cascade,
    display_name text check (char_length(display_name) <= 200),
    avatar_url text check (char_length(avatar_url) <= 2000),
    company text check (char_length(company) <= 200),
    job_title text check (char_length(job_title) <= 200),
    updated_at timestamptz not null default now()
);
comment on table eventlive.profiles is 'Viewer profile fields shown to webinar staff.';
alter table eventlive.profiles enable row level security;
grant select on eventlive.profiles to authenticated;
grant insert (user_id, display_name, avatar_url, company, job_title) on eventlive.profiles to authenticated;
grant update (display_name, avatar_url, company, job_title, updated_at) on eventlive.profiles to authenticated;
grant select, insert, update, delete on eventlive.profiles to service_role;

-- Every viewing session, kept after it ends (history and the superseded check).
create table eventlive.viewer_sessions (
    session_id uuid primary key,
    webinar_id bigint not null references eventlive.webinars (id) on delete cascade,
    user_id uuid not null references auth.users (id) on delete cascade,
    started_at timestamptz not null default now(),
    ended_at timestamptz,
    end_reason text check (end_reason in ('left', 'superseded', 'expired')),
    superseded_by uuid,
    client jsonb,
    check ((ended_at is null) = (end_reason is null))
);
comment on table eventlive.viewer_sessions is 'Viewing sessions, one per device entry; ended ones say why (left|superseded|expired).';
alter table eventlive.viewer_sessions enable row level security;
grant select on eventlive.viewer_sessions to authenticated;
grant select, insert, update, delete on eventlive.viewer_sessions to service_role;

-- Live presence: one row per viewer per webinar naming the active session. Heartbeats
-- update last_seen_at in place; no index covers it and the fill factor leaves room,
-- so those updates stay HOT (no index writes). Only registered viewers are present:
-- the key references their registration, so deleting a user or a registration
-- cascades here through this table's own primary key (no extra index to maintain).
create table eventlive.presence (
    webinar_id bigint not null references eventlive.webinars (id) on delete cascade,
    user_id uuid not null,
    session_id uuid not null,
    started_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    primary key (webinar_id, user_id),
    foreign key (webinar_id, user_id) references eventlive.registrations (webinar_id, user_id) on delete cascade
) with (fillfactor = 70);
comment on table eventlive.presence is 'The active session of each viewer of each webinar and when it was last seen (heartbeat).';
alter table eventlive.presence enable row level security;
grant select on eventlive.presence to authenticated;
grant select, insert, update, delete on eventlive.presence to service_role;

-- Append-only record of entries, re-confirmations, supersessions and leaves.
-- No foreign keys on purpose: every track_access appends here, and an FK check would
-- take a FOR KEY SHARE lock on the webinar row (one hot row for the whole crowd,
-- multixacts and WAL per append). Rows of deleted webinars/users go with retention.
create table eventlive.access_log (
    id bigint generated always as identity primary key,
    webinar_id bigint not null,
    user_id uuid not null,
    session_id uuid not null,
    kind text not null check (kind in ('enter', 'track', 'superseded', 'leave')),
    at timestamptz not null default now(),
    client jsonb
);
comment on table eventlive.access_log is 'Append-only access record: enter, track, superseded, leave.';
alter table eventlive.access_log enable row level security;
grant select on eventlive.access_log to authenticated;
grant select, insert on eventlive.access_log to service_role;

-- The one clock every function reads. Production: the transaction's now(). The test
-- kit's freeze_now() replaces this function inside a throwaway clone database, which
-- functions with search_path = '' could not get by shadowing pg_catalog.now().
create or replace function eventlive.now() returns timestamptz
language sql stable
as $$ select pg_catalog.now() $$;
comment on function eventlive.now() is 'Current time for eventlive functions; the test kit may freeze it in a test database.';
grant execute on function eventlive.now() to anon, authenticated, service_role;
