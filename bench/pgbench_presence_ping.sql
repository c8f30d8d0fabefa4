-- One heartbeat exactly as the shim sends it: one transaction, one pipeline (one round
-- trip): switch role, set the claims transaction-locally, call. Run with -M extended
-- (statements are parsed in order, after the role switch), as authenticator.
\set u random(1, :viewers)
\startpipeline
begin;
set local role authenticated;
select set_config('request.jwt.claims', '{"role":"authenticated","sub":"' || lpad(to_hex(:u::integer), 32, '0') || '"}', true);
select api.presence_ping(:webinar, ('00000010' || lpad(to_hex(:u::integer), 24, '0'))::uuid);
commit;
\endpipeline
