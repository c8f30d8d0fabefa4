-- What Supabase already has, created only where it is missing, so that the same
-- schema runs on plain PostgreSQL 15+ and on a Supabase project unchanged.
--
-- The rule: a statement here creates, grants on or comments an object only when that
-- object is missing; every object it creates is recorded in eventlive_migrations.objects,
-- the one record of what the project made outside its own schemas (later files change
-- such an object only when it is recorded there). On Supabase every object below exists,
-- belongs to Supabase, and this file changes nothing.
-- eventlive: revises sha256 38341ce53e8dbf05a05c06627404555a8da66c57d656311483dfc576da5e462e
-- eventlive: revises sha256 622f5efe54e362d06db11df376d1f3d0a796905f1102733197259fb7128e0d75
-- (Those texts ran create ... if not exists and comment on unconditionally: they failed on
-- a Supabase project created since April 2025 and commented Supabase's tables on older
-- ones. Databases that applied them keep their objects; 0010 records those as ours.)

-- Catalog and role changes queue behind live transactions: give up rather than stall.
set local lock_timeout = '5s';

-- Roles are cluster-wide: create each one only if absent, never alter an existing one,
-- and grant a membership only where it is missing.
do $roles$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
    -- The shim logs in as authenticator and can only switch to the three API roles.
    if not exists (select from pg_catalog.pg_roles where rolname = 'authenticator') then
        create role authenticator login noinherit;
    end if;
    if not pg_catalog.pg_has_role('authenticator', 'anon', 'member') then
        grant anon to authenticator;
    end if;
    if not pg_catalog.pg_has_role('authenticator', 'authenticated', 'member') then
        grant authenticated to authenticator;
    end if;
    if not pg_catalog.pg_has_role('authenticator', 'service_role', 'member') then
        grant service_role to authenticator;
    end if;
end
$roles$;

-- auth: the schema, auth.uid(), auth.role(), auth.jwt() exactly as Supabase defines them
-- (they read the claims that PostgREST or our shim put in request.jwt.claims), and a
-- subset of Supabase's auth.users, so that the same inserts work on both.
do $auth$
declare
    v_created text[] := '{}';
begin
    if pg_catalog.to_regnamespace('auth') is null then
        create schema auth;
        comment on schema auth is 'Stand-in for Supabase''s auth schema on plain PostgreSQL.';
        grant usage on schema auth to anon, authenticated, service_role;
        v_created := pg_catalog.array_append(v_created, 'schema:auth');
    end if;
    if pg_catalog.to_regprocedure('auth.uid()') is null then
        create function auth.uid() returns uuid
        language sql stable
        as $body$
            select coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $body$;
        comment on function auth.uid() is 'The user id (sub claim) of the current request, or null.';
        grant execute on function auth.uid() to anon, authenticated, service_role;
        v_created := pg_catalog.array_append(v_created, 'function:auth.uid()');
    end if;
    if pg_catalog.to_regprocedure('auth.role()') is null then
        create function auth.role() returns text
        language sql stable
        as $body$
            select coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $body$;
        comment on function auth.role() is 'The role claim of the current request, or null.';
        grant execute on function auth.role() to anon, authenticated, service_role;
        v_created := pg_catalog.array_append(v_created, 'function:auth.role()');
    end if;
    if pg_catalog.to_regprocedure('auth.jwt()') is null then
        create function auth.jwt() returns jsonb
        language sql stable
        as $body$
            select coalesce(
                nullif(current_setting('request.jwt.claim', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $body$;
        comment on function auth.jwt() is 'All claims of the current request as jsonb, or null.';
        grant execute on function auth.jwt() to anon, authenticated, service_role;
        v_created := pg_catalog.array_append(v_created, 'function:auth.jwt()');
    end if;
    if pg_catalog.to_regclass('auth.users') is null then
        create table auth.users (
            id uuid primary key,
            email text,
            raw_user_meta_data jsonb,
            created_at timestamptz default now()
        );
        comment on table auth.users is
        'Stand-in for Supabase auth.users on plain PostgreSQL (id, email, raw_user_meta_data, created_at).';
        v_created := pg_catalog.array_append(v_created, 'table:auth.users');
    end if;
    insert into eventlive_migrations.objects (kind, identity, created_by)
    select split_part(o, ':', 1), substr(o, strpos(o, ':') + 1), 'sql/0001_supabase_compat.sql'
    from unnest(v_created) as o;
end
$auth$;

-- realtime: Supabase Realtime's authorization table, its topic() helper and send(), so
-- that policies on realtime.messages can be written and tested on plain PostgreSQL.
-- realtime.messages has Supabase's columns and is partitioned by range of inserted_at as
-- theirs is; where Realtime creates a partition per day, the stand-in keeps one default
-- partition (it holds the join probes, which roll back, and whatever realtime.send writes).
do $realtime$
declare
    v_created text[] := '{}';
begin
    if pg_catalog.to_regnamespace('realtime') is null then
        create schema realtime;
        comment on schema realtime is 'Stand-in for Supabase''s realtime schema on plain PostgreSQL.';
        grant usage on schema realtime to anon, authenticated, service_role;
        v_created := pg_catalog.array_append(v_created, 'schema:realtime');
    end if;
    if pg_catalog.to_regclass('realtime.messages') is null then
        create table realtime.messages (
            topic text not null,
            extension text not null,
            payload jsonb,
            event text,
            private boolean default false,
            updated_at timestamp without time zone not null default now(),
            inserted_at timestamp without time zone not null default now(),
            id uuid not null default gen_random_uuid(),
            primary key (id, inserted_at)
        ) partition by range (inserted_at);
        create table realtime.messages_default partition of realtime.messages default;
        create index messages_inserted_at_topic_index on realtime.messages (inserted_at desc, topic)
        where extension = 'broadcast' and private is true;
        alter table realtime.messages enable row level security;
        grant select, insert, update on realtime.messages to anon, authenticated, service_role;
        comment on table realtime.messages is
        'Stand-in for Supabase realtime.messages: its RLS policies decide who may receive and send on a channel.';
        v_created := pg_catalog.array_append(v_created, 'table:realtime.messages');
    end if;
    if pg_catalog.to_regprocedure('realtime.topic()') is null then
        create function realtime.topic() returns text
        language sql stable
        as $body$ select nullif(current_setting('realtime.topic', true), '')::text $body$;
        comment on function realtime.topic() is 'The channel topic of the current Realtime authorization check.';
        grant execute on function realtime.topic() to anon, authenticated, service_role;
        v_created := pg_catalog.array_append(v_created, 'function:realtime.topic()');
    end if;
    -- send as Supabase defines it: an insert into realtime.messages with realtime.topic
    -- set, under the caller's rights (the insert policies decide), errors turned into a
    -- warning, the message id added to the payload.
    if pg_catalog.to_regprocedure('realtime.send(jsonb, text, text, boolean)') is null then
        create function realtime.send(
            payload jsonb, event text, topic text, private boolean default true
        ) returns void
        language plpgsql
        as $body$
        declare
            v_id uuid := pg_catalog.gen_random_uuid();
        begin
            begin
                perform pg_catalog.set_config('realtime.topic', send.topic, true);
                insert into realtime.messages (id, payload, event, topic, private, extension)
                values (
                    v_id,
                    case when send.payload ? 'id' then send.payload
                         else pg_catalog.jsonb_set(send.payload, '{id}', pg_catalog.to_jsonb(v_id)) end,
                    send.event, send.topic, send.private, 'broadcast'
                );
            exception
                when others then
                    raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
            end;
        end;
        $body$;
        comment on function realtime.send(jsonb, text, text, boolean) is
        'Broadcast a message on a topic by inserting it into realtime.messages (Supabase''s signature and behaviour).';
        grant execute on function realtime.send(jsonb, text, text, boolean) to authenticated, service_role;
        v_created := pg_catalog.array_append(v_created, 'function:realtime.send(jsonb,text,text,boolean)');
    end if;
    insert into eventlive_migrations.objects (kind, identity, created_by)
    select split_part(o, ':', 1), substr(o, strpos(o, ':') + 1), 'sql/0001_supabase_compat.sql'
    from unnest(v_created) as o;
end
$realtime$;
