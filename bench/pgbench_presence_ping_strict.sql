-- The cheapest form in which PostgreSQL takes one heartbeat (issue #19, point 5): one
-- prepared statement per transaction, autocommit: switch role and set the claims
-- transaction-locally, then call, in one select (evaluated left to right). Run with
-- -M prepared as bench_caller (bench/env.py: a login role with exactly authenticated's
-- rights; the statement is parsed and started as the login role, before its own role
-- switch, and authenticator may not use schema api until it has switched).
\set u random(1, :viewers)
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', '{"role":"authenticated","sub":"' || lpad(to_hex(:u::integer), 32, '0') || '"}', true), api.presence_ping(:webinar, ('00000010' || lpad(to_hex(:u::integer), 24, '0'))::uuid);
