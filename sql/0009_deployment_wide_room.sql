-- The live room across processes and nodes (issue #20): what one shim process takes in
-- (a REST broadcast, an allowed client broadcast, an SSE ticket's first use) is decided
-- or carried by the database, so every process and node sees it.
--   * room_broadcasts: a broadcast whose notice would not fit a NOTIFY payload (8000
--     bytes) waits here for the hubs to read it by id; smaller ones travel in the
--     NOTIFY itself and are never stored (eventlive.broadcast, functions/05_room.sql).
--   * sse_tickets_used: an SSE ticket's nonce, inserted at its first use, kept until the
--     ticket has expired; the insert decides "first use" across the deployment
--     (eventlive.use_sse_ticket).
-- Both are written only by security definer functions that only eventlive_hub (the
-- shim's authenticator switches to it) may call; housekeeping removes old rows.

set local lock_timeout = '5s';

create table eventlive.room_broadcasts (
    id bigint generated always as identity primary key,
    topic text not null check (length(topic) between 1 and 255),
    event text not null check (length(event) between 1 and 255),
    key text check (length(key) <= 100),
    payload json not null check (json_typeof(payload) = 'object'),
    created_at timestamptz not null default now()
);
comment on table eventlive.room_broadcasts is 'Broadcasts too large for a NOTIFY payload, read by id by every process''s hub (payload as the sender wrote it); kept one minute.';
alter table eventlive.room_broadcasts enable row level security;
grant select on eventlive.room_broadcasts to eventlive_hub;

create table eventlive.sse_tickets_used (
    nonce text primary key check (length(nonce) between 16 and 64),
    expires_at timestamptz not null
);
comment on table eventlive.sse_tickets_used is 'SSE tickets already used (their nonce), until they expire: a ticket is accepted once across every process and node.';
alter table eventlive.sse_tickets_used enable row level security;
grant select on eventlive.sse_tickets_used to eventlive_hub;
