-- The live room's event log: every chat and Q&A write, every pushed notice,
-- is one row here with a per-webinar seq that has no gaps and follows commit order, so a
-- subscriber or a polling client that resumes "after seq N" never skips a row.
-- Writers go through eventlive.publish (functions/01_room.sql); the realtime hub reads
-- through eventlive.room_events_since as the internal role eventlive_hub.

-- Catalog and role changes queue behind live transactions: give up rather than stall.
set local lock_timeout = '5s';

-- The hub's role: it reads every webinar's events (one read per tick per webinar, for
-- all its subscribers) and nothing else. No login: the shim logs in as authenticator
-- and switches to it, as it switches to the API roles. Roles are cluster-wide: create
-- it only if absent, and never let a JWT claim it (EVENTLIVE_JWT_ROLES does not list it).
do $roles$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'eventlive_hub') then
        create role eventlive_hub nologin noinherit;
    end if;
    grant eventlive_hub to authenticator;
end
$roles$;
grant usage on schema eventlive to eventlive_hub;

-- The per-webinar counter behind seq. publish() updates this row in the writing
-- transaction: the row lock is held until commit, so the next writer of the same
-- webinar waits and reads the committed value. Hence seq order = commit order (a
-- reader never sees N+1 before N) and a rollback gives its number back (no gap).
-- Writers of one webinar serialise from publish() to commit: callers publish last.
create table eventlive.room_sequences (
    webinar_id bigint primary key references eventlive.webinars (id) on delete cascade,
    last_seq bigint not null default 0 check (last_seq >= 0)
);
comment on table eventlive.room_sequences is 'The last seq given in each webinar''s live room (its row lock orders publishers by commit).';
alter table eventlive.room_sequences enable row level security;
grant select on eventlive.room_sequences to eventlive_hub;
grant select, insert, update, delete on eventlive.room_sequences to service_role;

-- The event log. Keyed by (webinar_id, seq): the hub's "after seq N" read is one range
-- scan of the primary key. The foreign key to room_sequences (not webinars) checks a
-- row this transaction has just locked, so it adds no lock on the hot webinars row.
create table eventlive.room_events (
    webinar_id bigint not null references eventlive.room_sequences (webinar_id) on delete cascade,
    seq bigint not null check (seq > 0),
    channel text not null check (
        channel in ('chat', 'qa', 'admin')
        or channel ~ '^user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
    ),
    event text not null check (event ~ '^[a-z][a-z_]{0,63}$'),
    payload jsonb not null check (jsonb_typeof(payload) = 'object'),
    created_at timestamptz not null default now(),
    primary key (webinar_id, seq)
);
comment on table eventlive.room_events is 'Live-room events per webinar in commit order (seq gap-free): channel chat|qa|admin|user:<uuid>, event name, payload with seq at its top level.';
alter table eventlive.room_events enable row level security;
grant select on eventlive.room_events to eventlive_hub;
grant select, insert, update, delete on eventlive.room_events to service_role;

-- Supabase's realtime.messages, as their Realtime creates it (columns, types, primary
-- key, grants). 0001 created an earlier stand-in with a bigint id; it never held data
-- that mattered (nothing wrote it), so it is replaced here. On Supabase the table is
-- theirs (no stand-in comment) and nothing below touches it.
do $realtime$
begin
    if pg_catalog.obj_description('realtime.messages'::regclass, 'pg_class') like 'Stand-in for Supabase%' then
        execute 'drop table realtime.messages';
        execute $ddl$
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
            )
        $ddl$;
        execute $ddl$
            create index messages_inserted_at_topic_index on realtime.messages (inserted_at desc, topic)
            where extension = 'broadcast' and private is true
        $ddl$;
        execute 'alter table realtime.messages enable row level security';
        execute 'grant select, insert, update on realtime.messages to anon, authenticated, service_role';
        execute $ddl$
            comment on table realtime.messages is
            'Supabase realtime.messages (plain-PostgreSQL copy): its RLS policies decide who may receive and send on a channel.'
        $ddl$;
    end if;
end
$realtime$;

-- realtime.send as Supabase defines it: an insert into realtime.messages with
-- realtime.topic set, under the caller's rights (the insert policies decide), errors
-- turned into a warning. Created only where absent.
do $send$
begin
    if to_regprocedure('realtime.send(jsonb, text, text, boolean)') is null then
        execute $fn$
            create function realtime.send(
                payload jsonb, event text, topic text, private boolean default true
            ) returns void
            language plpgsql
            as $body$
            declare
                generated_id uuid;
                final_payload jsonb;
            begin
                begin
                    generated_id := pg_catalog.gen_random_uuid();
                    if payload ? 'id' then
                        final_payload := payload;
                    else
                        final_payload := pg_catalog.jsonb_set(payload, '{id}', pg_catalog.to_jsonb(generated_id));
                    end if;
                    perform pg_catalog.set_config('realtime.topic', topic, true);
                    insert into realtime.messages (id, payload, event, topic, private, extension)
                    values (generated_id, final_payload, event, topic, private, 'broadcast');
                exception
                    when others then
                        raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
                end;
            end;
            $body$
        $fn$;
        execute $ddl$
            comment on function realtime.send(jsonb, text, text, boolean) is
            'Broadcast a message on a topic by inserting it into realtime.messages (Supabase''s signature and behaviour).'
        $ddl$;
        execute 'grant execute on function realtime.send(jsonb, text, text, boolean) to authenticated, service_role';
    end if;
end
$send$;
