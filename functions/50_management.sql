-- How webinars, staff and registrations get in. Webinars and staff: service_role only
-- (granted to no one else, so any other caller gets 42501: 401 anon / 403 otherwise).
-- Security definer: service_role has table rights, but running as the owner keeps one
-- code path and its checks for every caller.

create or replace function api.upsert_webinar(
    webinar_id bigint,
    title text,
    state text default 'live',
    entry text default 'auto',
    opens_at timestamptz default null,
    closes_at timestamptz default null,
    heartbeat_seconds integer default 120,
    track_seconds integer default 300
) returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_created boolean;
    v_row jsonb;
begin
    -- Explicit checks, so that a bad argument is a 400 with a reason, not a 23514.
    if upsert_webinar.webinar_id is null or upsert_webinar.webinar_id <= 0 then
        raise exception using errcode = '22023', message = 'webinar_id must be a positive integer.', detail = 'invalid_webinar_id';
    elsif upsert_webinar.title is null or pg_catalog.char_length(upsert_webinar.title) not between 1 and 500 then
        raise exception using errcode = '22023', message = 'title must have 1 to 500 characters.', detail = 'invalid_title';
    elsif upsert_webinar.state is null or upsert_webinar.state not in ('draft', 'scheduled', 'live', 'ended') then
        raise exception using errcode = '22023', message = 'state must be draft, scheduled, live or ended.', detail = 'invalid_state';
    elsif upsert_webinar.entry is null or upsert_webinar.entry not in ('auto', 'registered') then
        raise exception using errcode = '22023', message = 'entry must be auto or registered.', detail = 'invalid_entry';
    elsif upsert_webinar.heartbeat_seconds is null or upsert_webinar.heartbeat_seconds not between 15 and 3600 then
        raise exception using errcode = '22023', message = 'heartbeat_seconds must be between 15 and 3600.', detail = 'invalid_heartbeat_seconds';
    elsif upsert_webinar.track_seconds is null or upsert_webinar.track_seconds not between 30 and 86400 then
        raise exception using errcode = '22023', message = 'track_seconds must be between 30 and 86400.', detail = 'invalid_track_seconds';
    elsif upsert_webinar.closes_at <= upsert_webinar.opens_at then
        raise exception using errcode = '22023', message = 'closes_at must be after opens_at.', detail = 'invalid_window';
    end if;
    insert into eventlive.webinars as w (
        id, title, state, entry, opens_at, closes_at, heartbeat_seconds, track_seconds
    ) values (
        upsert_webinar.webinar_id, upsert_webinar.title, upsert_webinar.state, upsert_webinar.entry,
        upsert_webinar.opens_at, upsert_webinar.closes_at,
        upsert_webinar.heartbeat_seconds, upsert_webinar.track_seconds
    )
    on conflict (id) do update
    set title = excluded.title,
        state = excluded.state,
        entry = excluded.entry,
        opens_at = excluded.opens_at,
        closes_at = excluded.closes_at,
        heartbeat_seconds = excluded.heartbeat_seconds,
        track_seconds = excluded.track_seconds,
        updated_at = eventlive.now()
    returning
        pg_catalog.jsonb_build_object(
            'webinar_id', w.id,
            'title', w.title,
            'state', w.state,
            'entry', w.entry,
            'opens_at', w.opens_at,
            'closes_at', w.closes_at,
            'heartbeat_seconds', w.heartbeat_seconds,
            'track_seconds', w.track_seconds
        ),
        w.xmax = 0  -- no previous version: inserted, not updated
    into v_row, v_created;
    return v_row || pg_catalog.jsonb_build_object('created', v_created);
end
$$;
comment on function api.upsert_webinar(bigint, text, text, text, timestamptz, timestamptz, integer, integer) is
'service_role: creates or updates a webinar (state draft|scheduled|live|ended; entry auto|registered) and returns it with created. Errors: 400 invalid_webinar_id, invalid_title, invalid_state, invalid_entry, invalid_heartbeat_seconds, invalid_track_seconds, invalid_window.
@returns {webinar_id: bigint, title: text, state: draft|scheduled|live|ended, entry: auto|registered, opens_at: timestamptz|null, closes_at: timestamptz|null, heartbeat_seconds: integer, track_seconds: integer, created: boolean}';
grant execute on function api.upsert_webinar(
    bigint, text, text, text, timestamptz, timestamptz, integer, integer
) to service_role;

create or replace function api.set_staff(webinar_id bigint, user_id uuid, role text default 'host')
returns void
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
begin
    if set_staff.role is null or set_staff.role not in ('host', 'moderator') then
        raise exception using errcode = '22023', message = 'role must be host or moderator.', detail = 'invalid_role';
    end if;
    -- key share locks: the rows cannot vanish before the insert, so no 23503 escapes
    perform eventlive.require_webinar(set_staff.webinar_id, true);
    perform eventlive.require_named_user(set_staff.user_id);
    insert into eventlive.webinar_staff as s (webinar_id, user_id, role)
    values (set_staff.webinar_id, set_staff.user_id, set_staff.role)
    on conflict (webinar_id, user_id) do update set role = excluded.role;
end
$$;
comment on function api.set_staff(bigint, uuid, text) is
'service_role: makes a user host or moderator of a webinar (idempotent; 204). Errors: 400 invalid_role, 404 webinar_not_found, 404 user_not_found.';
grant execute on function api.set_staff(bigint, uuid, text) to service_role;

create or replace function api.remove_staff(webinar_id bigint, user_id uuid)
returns void
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
begin
    perform eventlive.require_webinar(remove_staff.webinar_id);
    delete from eventlive.webinar_staff as s
    where s.webinar_id = remove_staff.webinar_id and s.user_id = remove_staff.user_id;
end
$$;
comment on function api.remove_staff(bigint, uuid) is
'service_role: removes a user from a webinar''s staff (idempotent; 204). Errors: 404 webinar_not_found.';
grant execute on function api.remove_staff(bigint, uuid) to service_role;

-- A viewer registers themself (user_id omitted, entry must be open: scheduled or
-- live); only service_role registers someone else, in any state. Staff may not:
-- registering a stranger would let staff read that stranger's profile (profiles_batch).
-- Whether a user id exists is told to service_role alone: anyone else naming another
-- user is refused before auth.users is read.
create or replace function api.register(webinar_id bigint, user_id uuid default null)
returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_uid uuid := eventlive.require_sign_in('register', true);
    v_service boolean := eventlive.is_service_role();
    v_target uuid := coalesce(register.user_id, v_uid);
    v_webinar eventlive.webinars;
    v_source text;
    v_row eventlive.registrations;
    v_created boolean;
begin
    if v_target is null then
        raise exception using errcode = '22023', message = 'Name the user_id to register.', detail = 'user_id_required';
    end if;
    v_webinar := eventlive.require_webinar(register.webinar_id, true);
    if v_service then
        v_source := 'service';
    elsif v_target <> v_uid then
        raise exception using errcode = 'PT403', message = 'Only service_role may register another user.',
            detail = 'not_service_role';
    else
        v_source := 'self';
        perform eventlive.require_entry_open(v_webinar, eventlive.now());
    end if;
    if v_service then
        perform eventlive.require_named_user(v_target);
    else
        -- yourself: your token's user is gone (401, as on every function), not "no such user"
        perform eventlive.require_user(v_target, true);
    end if;
    insert into eventlive.registrations as r (webinar_id, user_id, source, registered_at)
    values (v_webinar.id, v_target, v_source, eventlive.now())
    on conflict (webinar_id, user_id) do nothing
    returning r.* into v_row;
    v_created := found;
    if not v_created then
        select r.* into v_row from eventlive.registrations as r
        where r.webinar_id = v_webinar.id and r.user_id = v_target;
    end if;
    return pg_catalog.jsonb_build_object(
        'webinar_id', v_row.webinar_id,
        'user_id', v_row.user_id,
        'registered', true,
        'created', v_created,
        'source', v_row.source,
        'registered_at', v_row.registered_at
    );
end
$$;
comment on function api.register(bigint, uuid) is
'Registers a viewer, idempotently: yourself (user_id omitted; webinar scheduled or live), or anyone as service_role. Returns webinar_id, user_id, registered, created, source, registered_at. Errors: 401 not_authenticated, 400 user_id_required, 404 webinar_not_found, 403 webinar_closed, 403 not_service_role (another user_id, unless service_role), 401 user_not_found (yourself: the token''s user no longer exists), 404 user_not_found (service_role only).
@returns {webinar_id: bigint, user_id: uuid, registered: boolean, created: boolean, source: self|auto|staff|service, registered_at: timestamptz}';
grant execute on function api.register(bigint, uuid) to authenticated, service_role;
