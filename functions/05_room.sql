-- The live room's plumbing: publish an event, read events for the hub, and
-- decide who may join a webinar's realtime topics (used by policies/realtime_messages.sql).

-- True when realtime.send is Supabase's (it exists and the project did not create it, by
-- eventlive_migrations.objects): then publish also sends every event through it. False
-- with the plain-PostgreSQL stand-in, whose realtime.messages nobody broadcasts from.
create or replace function eventlive.forwards_to_realtime() returns boolean
language sql stable security definer set search_path = '' as $$
    select pg_catalog.to_regprocedure('realtime.send(jsonb, text, text, boolean)') is not null
        and not exists (
            select from eventlive_migrations.objects as o
            where o.kind = 'function' and o.identity = 'realtime.send(jsonb,text,text,boolean)'
        )
$$;
comment on function eventlive.forwards_to_realtime() is
'True on a Supabase project (its own realtime.send exists): eventlive.publish then also sends each event through realtime.send.';

-- Append one event to a webinar's room log and return its seq. Every chat and Q&A write
-- calls this last in its transaction: the room_sequences row lock taken here is held to
-- commit (so seq order is commit order and a rollback leaves no gap; see sql/0004), and
-- publishing last keeps that lock short. The payload gets seq at its top level.
-- pg_notify is a wake-up hint for the hubs, not the delivery: they read the log. Postgres
-- folds identical notifications of one transaction into one, so a transaction that
-- publishes several events sends one 'eventlive_room' notice per webinar.
-- On a Supabase project (eventlive.forwards_to_realtime) each event also goes through
-- Supabase's realtime.send, private, on the same topic (webinar:{id}:{channel}), so front
-- ends on Supabase's own Realtime get the same room, authorized by the same policies on
-- realtime.messages. It runs as this function's owner (Supabase's postgres: bypassrls).
-- No grant: only security definer api functions (as owner) publish.
create or replace function eventlive.publish(
    webinar_id bigint, channel text, event text, payload jsonb
) returns bigint
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_seq bigint;
begin
    update eventlive.room_sequences as s set last_seq = s.last_seq + 1
    where s.webinar_id = publish.webinar_id
    returning s.last_seq into v_seq;
    if not found then
        -- First event of this webinar. Continue after any events left by a deleted and
        -- recreated webinar of the same id (cascade removes them, but be safe).
        insert into eventlive.room_sequences as s (webinar_id, last_seq)
        values (
            publish.webinar_id,
            1 + coalesce(
                (select max(e.seq) from eventlive.room_events as e where e.webinar_id = publish.webinar_id), 0
            )
        )
        on conflict on constraint room_sequences_pkey do update set last_seq = s.last_seq + 1
        returning s.last_seq into v_seq;
    end if;
    insert into eventlive.room_events (webinar_id, seq, channel, event, payload, created_at)
    values (
        publish.webinar_id, v_seq, publish.channel, publish.event,
        coalesce(publish.payload, '{}'::jsonb) || pg_catalog.jsonb_build_object('seq', v_seq),
        eventlive.now()
    );
    perform pg_catalog.pg_notify('eventlive_room', publish.webinar_id::text);
    if eventlive.forwards_to_realtime() then
        perform realtime.send(
            coalesce(publish.payload, '{}'::jsonb) || pg_catalog.jsonb_build_object('seq', v_seq),
            publish.event,
            'webinar:' || publish.webinar_id || ':' || publish.channel,
            true
        );
    end if;
    return v_seq;
end
$$;
comment on function eventlive.publish(bigint, text, text, jsonb) is
'Append an event (channel chat|qa|admin|user:<uuid>) to a webinar''s room log; returns its seq (gap-free, commit order) and notifies channel eventlive_room with the webinar id.';

-- The hub's read: the events of one webinar after a seq, in order, at most max_rows
-- (1..1000). One range scan of room_events' primary key. Invoker rights: only
-- eventlive_hub holds select on room_events (and its policy).
create or replace function eventlive.room_events_since(
    webinar_id bigint, after_seq bigint, max_rows integer
) returns setof eventlive.room_events
language sql stable set search_path = '' as $$
    select e.*
    from eventlive.room_events as e
    where e.webinar_id = room_events_since.webinar_id and e.seq > room_events_since.after_seq
    order by e.seq
    limit least(greatest(coalesce(room_events_since.max_rows, 100), 1), 1000)
$$;
comment on function eventlive.room_events_since(bigint, bigint, integer) is
'Events of a webinar with seq > after_seq in seq order, at most max_rows (1..1000): the realtime hub''s delivery read.';
grant execute on function eventlive.room_events_since(bigint, bigint, integer) to eventlive_hub;

-- The hub's safety tick: the last committed seq of many webinars in one read, so that a
-- lost NOTIFY costs one cheap query for all active webinars, not one per webinar.
create or replace function eventlive.room_last_seqs(webinar_ids bigint[])
returns table (webinar_id bigint, last_seq bigint)
language sql stable set search_path = '' as $$
    select s.webinar_id, s.last_seq
    from eventlive.room_sequences as s
    where s.webinar_id = any(room_last_seqs.webinar_ids)
$$;
comment on function eventlive.room_last_seqs(bigint[]) is
'The last committed seq of each given webinar that has events (the hub''s periodic safety read).';
grant execute on function eventlive.room_last_seqs(bigint[]) to eventlive_hub;

-- A broadcast (REST broadcast, or a client broadcast the insert policies allowed) to
-- every process's hub: each message {topic, event, payload (an object), key} becomes one
-- NOTIFY on 'eventlive_room' (the hubs' one channel: a webinar id there is a room event,
-- a JSON object a broadcast) whose payload is {t, e, k, p}; when that would not fit
-- a NOTIFY payload (8000 bytes) the message goes into room_broadcasts and the notice is
-- {t, id} (the hubs that have subscribers of t read it by id). Nothing else is stored:
-- broadcasts are not room events (no seq, no replay), as Supabase's are not. Every
-- listener gets the notices in commit order, so each topic's broadcasts arrive in the
-- same order everywhere; the messages of one call keep their order. key (the sender's
-- process and count) makes each notice unique: Postgres folds identical notices of one
-- transaction into one. payload is json, not jsonb: it travels as the sender wrote it.
-- Who may send was decided before (the insert policies on realtime.messages, probed as
-- the sender): only eventlive_hub may call this.
create or replace function eventlive.broadcast(messages json) returns integer
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_message json;
    v_notice text;
    v_id bigint;
    v_count integer := 0;
begin
    if pg_catalog.json_typeof(broadcast.messages) is distinct from 'array' then
        raise exception using errcode = '22023', message = 'messages must be a JSON array.',
            detail = 'invalid_messages';
    end if;
    for v_message in select m.value from pg_catalog.json_array_elements(broadcast.messages) as m loop
        if pg_catalog.json_typeof(v_message -> 'topic') is distinct from 'string'
            or pg_catalog.json_typeof(v_message -> 'event') is distinct from 'string'
            or pg_catalog.length(v_message ->> 'event') not between 1 and 255
            or pg_catalog.length(v_message ->> 'topic') not between 1 and 255
            or pg_catalog.json_typeof(v_message -> 'payload') is distinct from 'object'
        then
            raise exception using errcode = '22023',
                message = 'Each message needs a topic, an event and an object payload.',
                detail = 'invalid_message';
        end if;
        v_notice := pg_catalog.json_build_object(
            't', v_message ->> 'topic', 'e', v_message ->> 'event', 'k', v_message ->> 'key',
            'p', v_message -> 'payload'
        )::text;
        if pg_catalog.octet_length(v_notice) >= 8000 then
            insert into eventlive.room_broadcasts (topic, event, key, payload)
            values (v_message ->> 'topic', v_message ->> 'event', v_message ->> 'key', v_message -> 'payload')
            returning id into v_id;
            v_notice := pg_catalog.json_build_object('t', v_message ->> 'topic', 'id', v_id)::text;
        end if;
        perform pg_catalog.pg_notify('eventlive_room', v_notice);
        v_count := v_count + 1;
    end loop;
    return v_count;
end
$$;
comment on function eventlive.broadcast(json) is
'Send broadcasts [{topic, event, payload, key}] to every process''s hub: NOTIFY eventlive_room with {t, e, k, p}, or {t, id} of a room_broadcasts row when that is 8000 bytes or more. Returns the number sent.';
grant execute on function eventlive.broadcast(json) to eventlive_hub;

-- The hub's read of a large broadcast, by the id its notice named. Invoker rights: only
-- eventlive_hub holds select on room_broadcasts (and its policy).
create or replace function eventlive.room_broadcast(id bigint)
returns table (topic text, event text, key text, payload text)
language sql stable set search_path = '' as $$
    select b.topic, b.event, b.key, b.payload::text
    from eventlive.room_broadcasts as b
    where b.id = room_broadcast.id
$$;
comment on function eventlive.room_broadcast(bigint) is
'A broadcast too large for its NOTIFY (topic, event, key, payload as sent), by the id its notice named: the realtime hub''s read.';
grant execute on function eventlive.room_broadcast(bigint) to eventlive_hub;

-- An SSE ticket's use: true the first time its nonce is seen anywhere in the deployment,
-- false afterwards (until housekeeping removes the row, a minute after the ticket
-- expired: by then every process refuses the ticket as expired). One insert ... on
-- conflict do nothing decides atomically; concurrent first uses wait for each other on
-- the primary key, one wins. The signature and expiry were checked by the caller.
create or replace function eventlive.use_sse_ticket(
    nonce text, expires_at timestamptz
) returns boolean
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_rows integer;
begin
    if use_sse_ticket.nonce is null or use_sse_ticket.expires_at is null then
        raise exception using errcode = '22023', message = 'nonce and expires_at are required.',
            detail = 'invalid_ticket';
    end if;
    insert into eventlive.sse_tickets_used as t (nonce, expires_at)
    values (use_sse_ticket.nonce, use_sse_ticket.expires_at)
    on conflict on constraint sse_tickets_used_pkey do nothing;
    get diagnostics v_rows = row_count;
    return v_rows = 1;
end
$$;
comment on function eventlive.use_sse_ticket(text, timestamptz) is
'True at the first use of an SSE ticket''s nonce across every process and node, false at any later one (kept until a minute after expires_at).';
grant execute on function eventlive.use_sse_ticket(text, timestamptz) to eventlive_hub;

-- Who may receive on a realtime topic, for the current user (auth.uid()):
--   webinar:{id}:chat, webinar:{id}:qa   registered viewers and staff of the webinar
--   webinar:{id}:admin                   staff of the webinar
--   webinar:{id}:user:{uid}              that user alone, when registered or staff
-- Anything else: nobody. Two primary-key lookups at most. Security definer so that the
-- policy on realtime.messages can read registrations and staff whatever the caller's
-- own RLS; it answers only for the caller, so it is no oracle about other users.
create or replace function eventlive.may_receive(topic text) returns boolean
language plpgsql stable security definer set search_path = '' as $$
declare
    v_uid uuid := (select auth.uid());
    v_parts text[];
    v_webinar_id bigint;
begin
    v_parts := pg_catalog.regexp_match(
        may_receive.topic,
        '^webinar:([1-9][0-9]{0,17}):(chat|qa|admin|user:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}))$'
    );
    if v_uid is null or v_parts is null then
        return false;
    end if;
    v_webinar_id := v_parts[1]::bigint;
    if v_parts[3] is not null and v_parts[3]::uuid <> v_uid then
        return false;  -- someone else's user topic
    end if;
    if exists (
        select from eventlive.webinar_staff as s
        where s.webinar_id = v_webinar_id and s.user_id = v_uid
    ) then
        return true;
    end if;
    return v_parts[2] <> 'admin' and exists (
        select from eventlive.registrations as r
        where r.webinar_id = v_webinar_id and r.user_id = v_uid
    );
end
$$;
comment on function eventlive.may_receive(text) is
'True when the current user may receive on this realtime topic: webinar:{id}:chat|qa (registered or staff), :admin (staff), :user:{uid} (that user, registered or staff).';
grant execute on function eventlive.may_receive(text) to authenticated;
