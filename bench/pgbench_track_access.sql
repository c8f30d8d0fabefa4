-- A re-confirmation (every track_seconds) of a present viewer's session, as the shim
-- sends it: one transaction, one pipeline. Run with -M extended, as authenticator.
\set u random(1, :viewers)
\startpipeline
begin;
set local role authenticated;
select set_config('request.jwt.claims', '{"role":"authenticated","sub":"' || lpad(to_hex(:u::integer), 32, '0') || '"}', true);
select api.track_access(:webinar, ('00000010' || lpad(to_hex(:u::integer), 24, '0'))::uuid);
commit;
\endpipeline
