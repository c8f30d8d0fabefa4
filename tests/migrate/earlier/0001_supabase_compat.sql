-- What Supabase already has, created only where it is missing, so that the same
-- schema runs on plain PostgreSQL 15+ and on a Supabase project unchanged.
-- On Supabase every object below exists and this file changes nothing.

-- Catalog and role changes queue behind live transactions: give up rather than stall.
set local lock_timeout = '5s';

-- Roles are cluster-wide: create each one only if absent, never alter an existing one.
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
    -- Granting a membership that exists only repeats a notice; Supabase has them all.
    grant anon, authenticated, service_role to authenticator;
end
$roles$;

create schema if not exists auth;

-- auth.uid(), auth.role(), auth.jwt() exactly as Supabase defines them: they read the
-- claims that PostgREST (or our shim) puts in request.jwt.claims for the transaction.
do $auth$
begin
    if to_regprocedure('auth.uid()') is null then
        execute $fn$
            create function auth.uid() returns uuid
            language sql stable
            as $body$
                select coalesce(
                    nullif(current_setting('request.jwt.claim.sub', true), ''),
                    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
                )::uuid
            $body$
        $fn$;
        comment on function auth.uid() is 'The user id (sub claim) of the current request, or null.';
    end if;
    if to_regprocedure('auth.role()') is null then
        execute $fn$
            create function auth.role() returns text
            language sql stable
            as $body$
                select coalesce(
                    nullif(current_setting('request.jwt.claim.role', true), ''),
                    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
                )::text
            $body$
        $fn$;
        comment on function auth.role() is 'The role claim of the current request, or null.';
    end if;
    if to_regprocedure('auth.jwt()') is null then
        execute $fn$
            create function auth.jwt() returns jsonb
            language sql stable
            as $body$
                select coalesce(
                    nullif(current_setting('request.jwt.claim', true), ''),
                    nullif(current_setting('request.jwt.claims', true), '')
                )::jsonb
            $body$
        $fn$;
        comment on function auth.jwt() is 'All claims of the current request as jsonb, or null.';
    end if;
end
$auth$;

grant usage on schema auth to anon, authenticated, service_role;
grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;

-- A subset of Supabase's auth.users: the same inserts work on both.
create table if not exists auth.users (
    id uuid primary key,
    email text,
    raw_user_meta_data jsonb,
    created_at timestamptz default now()
);
comment on table auth.users is 'Stand-in for Supabase auth.users on plain PostgreSQL (id, email, raw_user_meta_data, created_at).';

-- A stand-in for Supabase Realtime's authorization table and its topic() helper,
-- so that policies on realtime.messages can be written and tested on plain PostgreSQL.
create schema if not exists realtime;

create table if not exists realtime.messages (
    id bigint generated always as identity primary key,
    topic text not null,
    extension text not null default 'broadcast',
    payload jsonb,
    event text,
    private boolean default false,
    inserted_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
comment on table realtime.messages is 'Stand-in for Supabase realtime.messages: RLS here decides who may receive and send on a channel.';
alter table realtime.messages enable row level security;

do $realtime$
begin
    if to_regprocedure('realtime.topic()') is null then
        execute $fn$
            create function realtime.topic() returns text
            language sql stable
            as $body$ select nullif(current_setting('realtime.topic', true), '')::text $body$
        $fn$;
        comment on function realtime.topic() is 'The channel topic of the current Realtime authorization check.';
    end if;
end
$realtime$;

grant usage on schema realtime to anon, authenticated, service_role;
grant execute on function realtime.topic() to anon, authenticated, service_role;
