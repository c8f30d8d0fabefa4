-- The heartbeat's errors, one place for both entries: api.presence_ping raises them,
-- eventlive.presence_ping_batch returns them as PostgREST bodies. Same reason -> same
-- SQLSTATE, message and hint on either path.
create or replace function eventlive.ping_error(
    reason text, out sqlstate text, out message text, out hint text
)
language sql immutable set search_path = '' as $$
    select e.sqlstate, e.message, e.hint
    from (values
        ('not_authenticated', 'PT401', 'Sign in to send heartbeats.', null),
        ('invalid_session_id', '22023', 'A heartbeat needs the session_id that track_access returned.', null),
        ('webinar_not_found', 'PT404', 'This webinar does not exist.', null),
        ('webinar_closed', 'PT403', 'This webinar is not open.', null),
        ('not_registered', 'PT403', 'You are not registered for this webinar.', null),
        ('user_not_found', 'PT401', 'The user of this token no longer exists.', 'Sign in again.'),
        ('session_superseded', 'PT409', 'This session was taken over by another device.',
            'Stop sending heartbeats; call track_access without a session_id to continue here.'),
        ('session_ended', 'PT409', 'This session is not active.',
            'Call track_access without a session_id to enter again.')
    ) as e (reason, sqlstate, message, hint)
    where e.reason = ping_error.reason
$$;
comment on function eventlive.ping_error(text) is
'SQLSTATE, message and hint of each presence_ping error reason (both entries use it).';

-- The heartbeat's logic, shared by api.presence_ping (one viewer) and
-- eventlive.presence_ping_batch (many viewers in one statement), so they cannot drift.
-- Returns null when accepted (written or throttled), else the error reason.
-- Fast path = the webinar row by primary key + one HOT update of the viewer's presence
-- row (only last_seen_at changes, no index covers it, fillfactor 70). The update needs
-- no registration check: presence references registrations (FK, cascade), so a presence
-- row is proof of registration. It never registers. Writes: its presence row, or nothing
-- when throttled; once per minute per webinar, the first call also stores the minute's
-- viewer count (record_presence_minute).
-- Invoker rights: only the security definer callers above run it (no grant).
create or replace function eventlive.ping_core(
    p_webinar_id bigint, p_user_id uuid, p_session_id uuid, p_now timestamptz
)
returns text
language plpgsql volatile set search_path = '' as $$
declare
    v_webinar record;
    v_current uuid;
    v_end_reason text;
    v_written_before timestamptz;
begin
    if p_user_id is null then
        return 'not_authenticated';
    end if;
    if p_session_id is null then
        return 'invalid_session_id';
    end if;
    select w.id, w.state, w.closes_at, w.heartbeat_seconds, w.sampled_minute into v_webinar
    from eventlive.webinars as w where w.id = p_webinar_id;
    if not found then
        return 'webinar_not_found';
    end if;
    if not eventlive.entry_open(v_webinar.state, v_webinar.closes_at, p_now) then
        return 'webinar_closed';
    end if;

    -- Once, not per row: the helper is not inlined (it pins search_path).
    v_written_before := p_now - eventlive.ping_throttle(v_webinar.heartbeat_seconds);
    update eventlive.presence as p set last_seen_at = p_now
    where p.webinar_id = p_webinar_id
        and p.user_id = p_user_id
        and p.session_id = p_session_id
        and p.last_seen_at < v_written_before;
    if not found then
        -- Nothing written: throttled (the active session's row exists), or an error to
        -- name. Order: registration, then the session. A deleted user's registrations
        -- went with it (cascade): user_not_found, as eventlive.require_user says it (a
        -- reason here, not a raise: the batch answers each element).
        select p.session_id into v_current
        from eventlive.presence as p
        where p.webinar_id = p_webinar_id and p.user_id = p_user_id;
        if v_current is distinct from p_session_id then
            if not exists (
                select from eventlive.registrations as r
                where r.webinar_id = p_webinar_id and r.user_id = p_user_id
            ) then
                if not exists (select from auth.users as u where u.id = p_user_id) then
                    return 'user_not_found';
                end if;
                return 'not_registered';
            end if;
            select vs.end_reason into v_end_reason
            from eventlive.viewer_sessions as vs
            where vs.session_id = p_session_id
                and vs.webinar_id = p_webinar_id and vs.user_id = p_user_id;
            if v_end_reason = 'superseded' then
                return 'session_superseded';
            end if;
            return 'session_ended';
        end if;
    end if;

    if v_webinar.sampled_minute is null or v_webinar.sampled_minute < pg_catalog.date_trunc('minute', p_now) then
        perform eventlive.record_presence_minute(p_webinar_id, p_now);
    end if;
    return null;
end
$$;
comment on function eventlive.ping_core(bigint, uuid, uuid, timestamptz) is
'The heartbeat of one viewer at p_now: null when accepted, else the error reason (see eventlive.ping_error).';

-- The heartbeat, one viewer per call (eventlive.ping_core does the work).
-- Security definer: viewers cannot write presence directly.
create or replace function api.presence_ping(webinar_id bigint, session_id uuid)
returns void
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_reason text;
    v_error record;
begin
    -- A heartbeat lost in a crash is replaced by the next one: it need not wait for the
    -- WAL flush. Transaction-local, and this transaction writes nothing else.
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
    v_reason := eventlive.ping_core(
        presence_ping.webinar_id, auth.uid(), presence_ping.session_id, eventlive.now()
    );
    if v_reason is null then
        return;
    end if;
    select e.sqlstate, e.message, e.hint into v_error from eventlive.ping_error(v_reason) as e;
    if v_error.hint is null then
        raise exception using errcode = v_error.sqlstate, message = v_error.message,
            detail = v_reason;
    end if;
    raise exception using errcode = v_error.sqlstate, message = v_error.message,
        detail = v_reason, hint = v_error.hint;
end
$$;
comment on function api.presence_ping(bigint, uuid) is
'Heartbeat of an active session (every heartbeat_seconds; 204). Never registers. A heartbeat within a quarter heartbeat of the last written one is accepted but not written. Errors: 401 not_authenticated, 400 invalid_session_id, 404 webinar_not_found, 403 webinar_closed, 403 not_registered, 401 user_not_found, 409 session_superseded, 409 session_ended.';
grant execute on function api.presence_ping(bigint, uuid) to authenticated;

-- Ends a session at once. Idempotent: leaving an ended, superseded or unknown session
-- (or a closed webinar) is a no-op 204, so retries and racing tabs never fail.
-- Takes the viewer's entry lock so that it interleaves cleanly with track_access.
create or replace function api.presence_leave(webinar_id bigint, session_id uuid)
returns void
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_uid uuid := eventlive.require_sign_in('leave a webinar');
    v_now timestamptz := eventlive.now();
begin
    if presence_leave.session_id is null then
        raise exception using errcode = '22023', message = 'Leaving needs the session_id that track_access returned.',
            detail = 'invalid_session_id';
    end if;
    perform eventlive.require_webinar(presence_leave.webinar_id);
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
