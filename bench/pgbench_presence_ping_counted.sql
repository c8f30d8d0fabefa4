-- The heartbeat plus a per-minute counter row bumped on every call: the write-path
-- counter alternative for access_stats (the copy is made by hot_path_sql.py).
\set u random(1, :viewers)
\startpipeline
begin;
set local role authenticated;
select set_config('request.jwt.claims', '{"role":"authenticated","sub":"' || lpad(to_hex(:u::integer), 32, '0') || '"}', true);
select bench.presence_ping_counted(:webinar, ('00000010' || lpad(to_hex(:u::integer), 24, '0'))::uuid);
commit;
\endpipeline
