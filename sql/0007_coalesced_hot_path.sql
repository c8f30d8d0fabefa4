-- The coalesced hot path: one statement carries the heartbeats of many viewers
-- (eventlive.presence_ping_batch in functions/32_coalesced.sql). Only the shim may call
-- it, through a dedicated role that no token can name: eventlive_batcher is NOLOGIN,
-- holds no API role, and is granted to authenticator alone (which switches to it per
-- transaction, as it switches to authenticated). The function lives in eventlive,
-- outside the exposed schemas, so it is never routable over HTTP.

set local lock_timeout = '5s';

do $roles$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'eventlive_batcher') then
        create role eventlive_batcher nologin noinherit;
    end if;
    grant eventlive_batcher to authenticator;
end
$roles$;

-- Name resolution only: every object in eventlive keeps its own grants (none to this role
-- but the batch functions).
grant usage on schema eventlive to eventlive_batcher;
