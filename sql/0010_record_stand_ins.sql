-- Databases that applied 0001 and 0004 before they recorded what they create: record the
-- stand-ins those texts made, and give the project's realtime.messages Supabase's shape
-- (partitioned by range of inserted_at). A fresh database has nothing to do here.
--
-- An object counts as the project's when the role that owns schema eventlive (the
-- migration role) owns it too. Never on a Supabase project: there auth and realtime are
-- Supabase's whoever owns them today (`eventlive doctor` reports a project copy found
-- there and how to restore Supabase's object).

set local lock_timeout = '5s';

do $stand_ins$
declare
    v_migrator oid := (select n.nspowner from pg_catalog.pg_namespace as n where n.nspname = 'eventlive');
begin
    if exists (select from pg_catalog.pg_roles as r where r.rolname = 'supabase_admin') then
        return;
    end if;
    insert into eventlive_migrations.objects (kind, identity, created_by)
    select o.kind, o.identity, 'sql/0010_record_stand_ins.sql'
    from (
        select 'schema' as kind, n.nspname::text as identity, n.nspowner as owner
        from pg_catalog.pg_namespace as n
        where n.nspname in ('auth', 'realtime')
        union all
        select 'table', c.oid::pg_catalog.regclass::text, c.relowner
        from pg_catalog.pg_class as c
        where c.oid in (pg_catalog.to_regclass('auth.users'), pg_catalog.to_regclass('realtime.messages'))
        union all
        select 'function', p.oid::pg_catalog.regprocedure::text, p.proowner
        from pg_catalog.pg_proc as p
        where p.oid in (
            pg_catalog.to_regprocedure('auth.uid()'),
            pg_catalog.to_regprocedure('auth.role()'),
            pg_catalog.to_regprocedure('auth.jwt()'),
            pg_catalog.to_regprocedure('realtime.topic()'),
            pg_catalog.to_regprocedure('realtime.send(jsonb, text, text, boolean)')
        )
    ) as o
    where o.owner = v_migrator
    on conflict (kind, identity) do nothing;
end
$stand_ins$;

-- The project's own unpartitioned copy (made by the earlier 0004) becomes partitioned,
-- rows kept. Its policies are the project's (policies/realtime_messages.sql, re-applied
-- after this file); a policy someone added by hand to the stand-in must be added again.
do $reshape$
begin
    if not exists (
        select from eventlive_migrations.objects as o
        where o.kind = 'table' and o.identity = 'realtime.messages'
    ) or exists (
        select from pg_catalog.pg_class as c
        where c.oid = pg_catalog.to_regclass('realtime.messages') and c.relkind = 'p'
    ) then
        return;
    end if;
    create temporary table messages_kept on commit drop as
    select m.topic, m.extension, m.payload, m.event, m.private, m.updated_at, m.inserted_at, m.id
    from realtime.messages as m;
    drop table realtime.messages;
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
    insert into realtime.messages (topic, extension, payload, event, private, updated_at, inserted_at, id)
    select k.topic, k.extension, k.payload, k.event, k.private, k.updated_at, k.inserted_at, k.id
    from messages_kept as k;
end
$reshape$;
