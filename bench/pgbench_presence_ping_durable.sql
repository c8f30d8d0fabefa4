-- The same heartbeat through a copy of presence_ping without synchronous_commit = off,
-- to measure what skipping the WAL flush buys (the copy is made by hot_path_sql.py).
\set u random(1, :viewers)
\startpipeline
begin;
set local role authenticated;
select set_config('request.jwt.claims', '{"role":"authenticated","sub":"' || lpad(to_hex(:u::integer), 32, '0') || '"}', true);
select bench.presence_ping_durable(:webinar, ('00000010' || lpad(to_hex(:u::integer), 24, '0'))::uuid);
commit;
\endpipeline
