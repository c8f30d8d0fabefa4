-- The heartbeat: the call made most often, so it costs as little as Postgres allows.
-- Fast path = the webinar row by primary key + one HOT update of the viewer's presence
-- row (only last_seen_at changes, no index covers it, fillfactor 70). It never
-- registers. Writes: its presence row, or nothing when throttled; once per minute per
-- webinar, the first call also stores the minute's viewer count (record_presence_minute).
-- Security definer: viewers cannot write presence directly.
create or replace function api.presence_ping(webinar_id bigint, session_id uuid)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
    v_uid uuid := auth.uid();
    v_now timestamptz := eventlive.now();
    v_webinar record;
    v_current uuid;
    v_end_reason text;
    v_written_before timestamptz;
begin
    if v_uid is null then
        raise exception using errcode = 'PT401', message = 'Sign in to send heartbeats.',
            detail = 'not_authenticated';
    end if;
    if presence_ping.session_id is null then
        raise exception using errcode = '22023', message = 'A heartbeat needs the session_id that track_access returned.',
            detail = 'invalid_session_id';
    end if;
    select w.id, w.state, w.closes_at, w.heartbeat_seconds, w.sampled_minute into v_webinar
    from eventlive.webinars as w where w.id = presence_ping.webinar_id;
    if not found then
        raise exception using errcode = 'PT404', message = 'This webinar does not exist.',
            detail = 'webinar_not_found';
    end if;
    if not eventlive.entry_open(v_webinar.state, v_webinar.closes_at, v_now) then
        raise exception using errcode = 'PT403', message = 'This webinar is not open.',
            detail = 'webinar_closed';
    end if;

    -- A heartbeat lost in a crash is replaced by the next one: it need not wait for the
    -- WAL flush. Transaction-local, and this transaction writes nothing else.
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
    -- Once, not per row: the helper is not inlined (it pins search_path).
    v_written_before := v_now - eventlive.ping_throttle(v_webinar.heartbeat_seconds);

    update eventlive.presence as p set last_seen_at = v_now
    where p.webinar_id = v_webinar.id
        and p.user_id = v_uid
        and p.session_id = presence_ping.session_id
        and p.last_seen_at < v_written_before
        and exists (
            select from eventlive.registrations as r
            where r.webinar_id = p.webinar_id and r.user_id = p.user_id
        );
    if not found then
        -- Nothing written: throttled (fine), or an error to name. Order: registration,
        -- then the session.
        if not exists (
            select from eventlive.registrations as r
            where r.webinar_id = v_webinar.id and r.user_id = v_uid
        ) then
            raise exception using errcode = 'PT403', message = 'You are not registered for this webinar.',
                detail = 'not_registered';
        end if;
        select p.session_id into v_current
        from eventlive.presence as p
        where p.webinar_id = v_webinar.id and p.user_id = v_uid;
        if v_current is distinct from presence_ping.session_id then
            select vs.end_reason into v_end_reason
            from eventlive.viewer_sessions as vs
            where vs.session_id = presence_ping.session_id
                and vs.webinar_id = v_webinar.id and vs.user_id = v_uid;
            if v_end_reason = 'superseded' then
                raise exception using errcode = 'PT409', message = 'This session was taken over by another device.',
                    detail = 'session_superseded', hint = 'Stop sending heartbeats; call track_access without a session_id to continue here.';
            end if;
            raise exception using errcode = 'PT409', message = 'This session is not active.',
                detail = 'session_ended', hint = 'Call track_access without a session_id to enter again.';
        end if;
    end if;

    if v_webinar.sampled_minute is null or v_webinar.sampled_minute < pg_catalog.date_trunc('minute', v_now) then
        perform eventlive.record_presence_minute(v_webinar.id, v_now);
    end if;
end
$$;
comment on function api.presence_ping(bigint, uuid) is
'Heartbeat of an active session (every heartbeat_seconds; 204). Never registers. A heartbeat within a quarter heartbeat of the last written one is accepted but not written. Errors: 401 not_authenticated, 400 invalid_session_id, 404 webinar_not_found, 403 webinar_closed, 403 not_registered, 409 session_superseded, 409 session_ended.';
grant execute on function api.presence_ping(bigint, uuid) to authenticated;

-- Ends a session at once. Idempotent: leaving an ended, superseded or unknown session
-- (or a closed webinar) is a no-op 204, so retries and racing tabs never fail.
-- Takes the viewer's entry lock so that it interleaves cleanly with track_access.
create or replace function api.presence_leave(webinar_id bigint, session_id uuid)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
    v_uid uuid := auth.uid();
    v_now timestamptz := eventlive.now();
begin
    if v_uid is null then
        raise exception using errcode = 'PT401', message = 'Sign in to leave a webinar.',
            detail = 'not_authenticated';
    end if;
    if presence_leave.session_id is null then
        raise exception using errcode = '22023', message = 'Leaving needs the session_id that track_access returned.',
            detail = 'invalid_session_id';
    end if;
    if not exists (select from eventlive.webinars as w where w.id = presence_leave.webinar_id) then
        raise exception using errcode = 'PT404', message = 'This webinar does not exist.',
            detail = 'webinar_not_found';
    end if;
    perform eventlive.lock_viewer(presence_leave.webinar_id, v_uid);
    delete from eventlive.presence as p
    where p.webinar_id = presence_leave.webinar_id and p.user_id = v_uid
        and p.session_id = presence_leave.session_id;
    update eventlive.viewer_sessions as vs
    set ended_at = v_now, end_reason = 'left'
    where vs.session_id = presence_leave.session_id
        and vs.webinar_id = presence_leave.webinar_id and vs.user_id = v_uid
        and vs.ended_at is null;
    if found then
        insert into eventlive.access_log (webinar_id, user_id, session_id, kind, at)
        values (presence_leave.webinar_id, v_uid, presence_leave.session_id, 'leave', v_now);
    end if;
end
$$;
comment on function api.presence_leave(bigint, uuid) is
'Ends the session at once (204). Idempotent: an ended or unknown session is a no-op. Errors: 401 not_authenticated, 400 invalid_session_id, 404 webinar_not_found.';
grant execute on function api.presence_leave(bigint, uuid) to authenticated;
