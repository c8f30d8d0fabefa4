-- The pre-incident data model, for the side-by-side benchmark only (bench/old_design).
-- Its own schema, so nothing here touches the product's tables. Indexes are given
-- to it generously (every lookup below has one): the comparison then measures the
-- request structure (queries per call, auth lookup, extra hop), not missing indexes.
create schema if not exists legacy;
grant usage on schema legacy to authenticated, service_role;

create table if not exists legacy.webinars (
    id bigint primary key,
    title text not null,
    status text not null default 'live'
);

-- No surrogate id (the incident's `select id` would have failed with 400 at every
-- call: that bug is NOT reproduced here, which flatters the old design).
create table if not exists legacy.registrations (
    webinar_id bigint not null references legacy.webinars (id),
    user_id uuid not null,
    created_at timestamptz not null default now(),
    primary key (webinar_id, user_id)
);

create table if not exists legacy.sessions (
    id uuid primary key,
    webinar_id bigint not null,
    user_id uuid not null,
    started_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    ended_at timestamptz
);
create index if not exists sessions_viewer on legacy.sessions (webinar_id, user_id) where ended_at is null;

create table if not exists legacy.presence (
    webinar_id bigint not null,
    user_id uuid not null,
    session_id uuid not null,
    last_seen_at timestamptz not null default now(),
    primary key (webinar_id, user_id)
);

create table if not exists legacy.access_logs (
    id bigint generated always as identity primary key,
    webinar_id bigint not null,
    user_id uuid not null,
    session_id uuid,
    kind text not null,
    at timestamptz not null default now()
);

grant select, insert, update on all tables in schema legacy to authenticated;
grant usage on all sequences in schema legacy to authenticated;
