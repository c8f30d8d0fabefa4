-- An entry of a viewer not yet registered (the join storm): auto-registration, a new
-- session, presence and the access record. Users :viewers+1 .. 2*:viewers exist in
-- auth.users but are registered nowhere. One transaction, one pipeline, -M extended.
\set u random(:viewers + 1, 2 * :viewers)
\startpipeline
begin;
set local role authenticated;
select set_config('request.jwt.claims', '{"role":"authenticated","sub":"' || lpad(to_hex(:u::integer), 32, '0') || '"}', true);
select api.track_access(:webinar);
commit;
\endpipeline
