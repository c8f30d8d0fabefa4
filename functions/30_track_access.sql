-- Entry and re-confirmation of a viewer (on entry, then every track_seconds): the logic,
-- shared by api.track_access (one viewer) and eventlive.track_access_batch (many viewers
-- in one statement, functions/32_coalesced.sql), so that the two cannot drift. Returns
-- api.track_access's answer; raises its errors. It does not tell a superseded device
-- (eventlive.tell_superseded): its callers do, after their last entry, because that
-- publish holds the webinar's room seq lock to commit.
-- Durable on purpose: registrations and sessions keep the default synchronous_commit.
-- Concurrency: the viewer lock (eventlive.lock_viewer) serialises a viewer's concurrent
-- entries (200 tabs at once end with one registration and one active session); writes
-- are upserts, so no unique violation can escape. Locks, in the order taken: the viewer
-- lock; the user's row (key share, before the first write that references it); the
-- registration; the presence row (read for update, before the superseded session's row:
-- the order housekeeping's expiry and presence_leave use, so neither can deadlock with
-- an entry); that session's row; with record_presence_minute the webinar row (skip
-- locked: never waited for). The registration counters are append-only (no row lock).
-- Invoker rights: only the security definer callers above run it (no grant).
create or replace function eventlive.track_core(
    p_webinar_id bigint, p_user_id uuid, p_session_id uuid, p_client jsonb, p_now timestamptz
)
returns jsonb
language plpgsql volatile set search_path = '' as $$
declare
    v_webinar eventlive.webinars;
    v_session uuid := p_session_id;
    v_known eventlive.viewer_sessions;
    v_entered boolean;
    v_registered boolean;
    v_auto boolean := false;
    v_new boolean := false;
    v_previous uuid;
begin
    if p_user_id is null then
        raise exception using errcode = 'PT401', message = 'Sign in to enter a webinar.',
            detail = 'not_authenticated';
    end if;
    if pg_catalog.pg_column_size(p_client) > 4096 then
        raise exception using errcode = '22023', message = 'The client description is larger than 4 kB.',
            detail = 'client_too_large';
    end if;
    select w.* into v_webinar from eventlive.webinars as w where w.id = p_webinar_id;
    if not found then
        raise exception using errcode = 'PT404', message = 'This webinar does not exist.',
            detail = 'webinar_not_found';
    end if;
    if not eventlive.entry_open(v_webinar.state, v_webinar.closes_at, p_now) then
        raise exception using errcode = 'PT403', message = 'This webinar is not open.',
            detail = 'webinar_closed';
    end if;

    -- One viewer's entries run one at a time.
    perform eventlive.lock_viewer(v_webinar.id, p_user_id);

    -- Registration: a read first, so that a registrant's re-track writes nothing here.
    select r.first_entered_at is not null into v_entered
    from eventlive.registrations as r
    where r.webinar_id = v_webinar.id and r.user_id = p_user_id;
    v_registered := found;
    -- A registration or a new session references the user: the user's row is locked
    -- before the first write (401 user_not_found when the token outlived its user, and a
    -- concurrent delete waits: no 23503, no deadlock against its cascade). A re-confirm
    -- (registered, known session) adds nothing: a deleted user's rows went with it (a
    -- delete racing one can still fail its presence write; the shim answers that 409
    -- without names).
    if not v_registered or v_session is null then
        perform eventlive.require_user(p_user_id, true);
    end if;
    if not v_registered then
        if v_webinar.entry = 'auto'
            or exists (
                select from eventlive.webinar_staff as s
                where s.webinar_id = v_webinar.id and s.user_id = p_user_id
            ) then
            insert into eventlive.registrations (webinar_id, user_id, source, registered_at, first_entered_at)
            values (
                v_webinar.id, p_user_id,
                case when v_webinar.entry = 'auto' then 'auto' else 'staff' end,
                p_now, p_now
            )
            on conflict (webinar_id, user_id) do nothing;
            v_auto := found;
        else
            raise exception using errcode = 'PT403', message = 'This webinar requires registration.',
                detail = 'not_registered';
        end if;
    elsif not v_entered then
        update eventlive.registrations as r set first_entered_at = p_now
        where r.webinar_id = v_webinar.id and r.user_id = p_user_id and r.first_entered_at is null;
    end if;

    -- Session: null means a new device or page load; a known id must be this viewer's
    -- and still active (an ended one is not revived: the client enters anew with null).
    if v_session is null then
        v_session := pg_catalog.gen_random_uuid();
        v_new := true;
    else
        select vs.* into v_known from eventlive.viewer_sessions as vs where vs.session_id = v_session;
        if not found then
            v_new := true;
        elsif v_known.user_id <> p_user_id or v_known.webinar_id <> v_webinar.id then
            raise exception using errcode = '22023', message = 'This session id belongs to another entry.',
                detail = 'invalid_session_id';
        elsif v_known.end_reason = 'superseded' then
            raise exception using errcode = 'PT409', message = 'This session was taken over by another device.',
                detail = 'session_superseded', hint = 'Enter again without a session_id to continue here.';
        elsif v_known.ended_at is not null then
            raise exception using errcode = 'PT409', message = 'This session has ended.',
                detail = 'session_ended', hint = 'Enter again without a session_id.';
        end if;
    end if;

    -- One active session per viewer: the presence row names it (locked here, before the
    -- session row below); another one is superseded.
    select p.session_id into v_previous
    from eventlive.presence as p
    where p.webinar_id = v_webinar.id and p.user_id = p_user_id
    for no key update;
    if v_previous = v_session then
        v_previous := null;
    elsif v_previous is not null then
        update eventlive.viewer_sessions as vs
        set ended_at = p_now, end_reason = 'superseded', superseded_by = v_session
        where vs.session_id = v_previous and vs.ended_at is null;
        insert into eventlive.access_log (webinar_id, user_id, session_id, kind, at)
        values (v_webinar.id, p_user_id, v_previous, 'superseded', p_now);
    end if;

    if v_new then
        insert into eventlive.viewer_sessions (session_id, webinar_id, user_id, started_at, client)
        values (v_session, v_webinar.id, p_user_id, p_now, p_client)
        on conflict (session_id) do nothing;
        if not found then  -- another viewer claimed this client-made id a moment ago
            raise exception using errcode = '22023', message = 'This session id belongs to another entry.',
                detail = 'invalid_session_id';
        end if;
    end if;

    insert into eventlive.presence as p (webinar_id, user_id, session_id, started_at, last_seen_at)
    values (v_webinar.id, p_user_id, v_session, p_now, p_now)
    on conflict (webinar_id, user_id) do update
    set session_id = excluded.session_id,
        started_at = case when p.session_id = excluded.session_id then p.started_at else excluded.started_at end,
        last_seen_at = excluded.last_seen_at;

    insert into eventlive.access_log (webinar_id, user_id, session_id, kind, at, client)
    values (
        v_webinar.id, p_user_id, v_session, case when v_new then 'enter' else 'track' end, p_now,
        p_client
    );

    if v_webinar.sampled_minute is null or v_webinar.sampled_minute < pg_catalog.date_trunc('minute', p_now) then
        perform eventlive.record_presence_minute(v_webinar.id, p_now);
    end if;

    return pg_catalog.jsonb_build_object(
        'session_id', v_session,
        'registered', true,
        'auto_registered', v_auto,
        'superseded_session_id', v_previous,
        'heartbeat_seconds', v_webinar.heartbeat_seconds,
        'track_seconds', v_webinar.track_seconds,
        -- uniform over 1..heartbeat: a crowd arriving in one second spreads its pings
        'first_ping_in', 1 + pg_catalog.floor(pg_catalog.random() * v_webinar.heartbeat_seconds)::integer
    );
end
$$;
comment on function eventlive.track_core(bigint, uuid, uuid, jsonb, timestamptz) is
'The entry or re-confirmation of one viewer at p_now (api.track_access''s logic, its answer and its errors), without telling the superseded device.';

-- The superseded device is told at once, on its user topic, from an entry's answer (its
-- session_id superseded superseded_session_id). Called last by the entry's caller:
-- publish holds the webinar's room seq lock to commit.
-- Invoker rights: only the security definer callers of eventlive.track_core run it.
create or replace function eventlive.tell_superseded(p_webinar_id bigint, p_user_id uuid, p_answer jsonb)
returns void
language plpgsql volatile set search_path = '' as $$
begin
    perform eventlive.publish(
        p_webinar_id, 'user:' || p_user_id, 'session_superseded',
        pg_catalog.jsonb_build_object(
            'session_id', (p_answer ->> 'superseded_session_id')::uuid,
            'superseded_by', (p_answer ->> 'session_id')::uuid
        )
    );
end
$$;
comment on function eventlive.tell_superseded(bigint, uuid, jsonb) is
'Publishes session_superseded {session_id, superseded_by} on webinar:{id}:user:{uid} for an entry''s answer that superseded a session.';

-- Entry and re-confirmation of one viewer (eventlive.track_core does the work).
-- Security definer: viewers may not write registrations, sessions or presence
-- directly; this function is the only way in, with its rules.
create or replace function api.track_access(
    webinar_id bigint,
    session_id uuid default null,
    client jsonb default null
) returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_uid uuid := auth.uid();
    v_answer jsonb;
begin
    v_answer := eventlive.track_core(
        track_access.webinar_id, v_uid, track_access.session_id, track_access.client, eventlive.now()
    );
    if v_answer ->> 'superseded_session_id' is not null then
        perform eventlive.tell_superseded(track_access.webinar_id, v_uid, v_answer);
    end if;
    return v_answer;
end
$$;
comment on function api.track_access(bigint, uuid, jsonb) is
'A viewer enters a webinar or re-confirms (every track_seconds). Registers automatically when the webinar''s entry is auto; one active session per viewer (a new one supersedes the old, named in superseded_session_id). Returns session_id, registered, auto_registered, superseded_session_id, heartbeat_seconds, track_seconds, first_ping_in. Errors: 401 not_authenticated, 404 webinar_not_found, 403 webinar_closed, 401 user_not_found (the token''s user no longer exists), 403 not_registered, 409 session_superseded, 409 session_ended, 400 invalid_session_id, 400 client_too_large.
@returns {session_id: uuid, registered: boolean, auto_registered: boolean, superseded_session_id: uuid|null, heartbeat_seconds: integer, track_seconds: integer, first_ping_in: integer}';
grant execute on function api.track_access(bigint, uuid, jsonb) to authenticated;
