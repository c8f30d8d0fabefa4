-- Helpers shared by the api functions and the RLS policies. Internal helpers get no
-- grant: api functions are security definer and call them as their owner.
--
-- Every helper pins search_path (Supabase's linter, lint 0011, and `eventlive doctor`'s
-- function-search-path): a function whose names resolve through the caller's path can
-- be pointed at the caller's objects. The price: a function with its own settings is
-- never inlined, so each use is a real call. As `language sql` such a call re-plans its
-- body in every transaction: the heartbeat (three helper calls) fell to 0.70-0.79 of its
-- inlined throughput (pgbench, 8 clients, 4 alternating rounds in one run). As plpgsql
-- the body's plan is cached per session: 0.76-1.07, within this machine's noise. So the
-- helpers are plpgsql. Callers compute a helper once into a variable, never in a
-- condition evaluated per row (tests/doctor/test_splinter.py proves it from the plans).

-- The clock. sql/0002_core_tables.sql created it (applied once); redefined here, pinned.
create or replace function eventlive.now() returns timestamptz
language plpgsql stable set search_path = '' as $$
begin
    return pg_catalog.now();
end
$$;
comment on function eventlive.now() is 'Current time for eventlive functions; the test kit may freeze it in a test database.';

-- Entry is open while the host says scheduled or live and closes_at has not passed.
-- opens_at does not gate entry: it is the advertised start, and the join storm arrives
-- minutes before it (a lobby). A clock-skewed opens_at must not turn a crowd away.
create or replace function eventlive.entry_open(
    state text, closes_at timestamptz, at timestamptz
) returns boolean
language plpgsql immutable set search_path = '' as $$
begin
    return state in ('scheduled', 'live') and (closes_at is null or at < closes_at);
end
$$;
comment on function eventlive.entry_open(text, timestamptz, timestamptz) is
'True when a webinar in this state, closing at closes_at, admits viewers at the given time.';

-- The service role is recognised by the role the request switched to, not by a claim:
-- any session may set request.jwt.claims, only members of service_role may set role.
create or replace function eventlive.is_service_role() returns boolean
language plpgsql stable set search_path = '' as $$
begin
    return pg_catalog.current_setting('role', true) = 'service_role';
end
$$;
comment on function eventlive.is_service_role() is
'True when the current request runs as service_role (set role, not a forgeable claim).';

-- The webinars the current user is staff of. Security definer so that policies on
-- webinar_staff (and the others) can use it without recursing into their own RLS;
-- policies call it as `webinar_id in (select eventlive.staff_webinar_ids())`, which
-- Postgres evaluates once per statement.
create or replace function eventlive.staff_webinar_ids() returns setof bigint
language sql stable security definer set search_path = '' as $$
    select s.webinar_id from eventlive.webinar_staff as s where s.user_id = (select auth.uid())
$$;
comment on function eventlive.staff_webinar_ids() is
'Ids of the webinars the current user is staff of (for RLS policies).';
grant execute on function eventlive.staff_webinar_ids() to authenticated;

-- Presence window: a viewer counts as present when seen within 1.5 heartbeats
-- (heartbeat + 50 % grace for jitter, the ping throttle and slow networks).
create or replace function eventlive.presence_window(heartbeat_seconds integer) returns interval
language plpgsql immutable set search_path = '' as $$
begin
    return pg_catalog.make_interval(secs => heartbeat_seconds * 1.5);
end
$$;
comment on function eventlive.presence_window(integer) is
'How long after its last heartbeat a viewer still counts as present: 1.5 heartbeats.';

-- Ping throttle: a ping within a quarter heartbeat (30 s at the default 120 s) of the
-- last written one writes nothing. Normal clients ping once per heartbeat and always
-- write; retry loops, duplicated tabs and reconnect storms cost a read, not a write.
create or replace function eventlive.ping_throttle(heartbeat_seconds integer) returns interval
language plpgsql immutable set search_path = '' as $$
begin
    return pg_catalog.make_interval(secs => heartbeat_seconds / 4.0);
end
$$;
comment on function eventlive.ping_throttle(integer) is
'A ping this soon after the last written heartbeat is not written: a quarter heartbeat.';

-- 401 user_not_found: the token is valid but its user is gone from auth.users (on
-- Supabase a token outlives its deleted user by up to an hour). Without this the first
-- write that references the user fails with PostgreSQL's own 23503, which names tables
-- and constraints and counts as a 409 (issue #21). Two kinds of caller, neither on the
-- heartbeat: a writer calls it before its first write (p_lock: a key share lock holds
-- the row to commit, so a concurrent delete waits and no 23503 can escape), a gate calls
-- it only when about to refuse a user for not being registered or staff (a deleted
-- user's rows went with it, by cascade), without a lock: a read-only transaction (GET)
-- may not take one. Volatile for the lock; no table write.
create or replace function eventlive.require_user(p_uid uuid, p_lock boolean)
returns void
language plpgsql volatile set search_path = '' as $$
begin
    if p_lock then
        perform from auth.users as u where u.id = p_uid for key share;
    else
        perform from auth.users as u where u.id = p_uid;
    end if;
    if not found then
        raise exception using errcode = 'PT401', message = 'The user of this token no longer exists.',
            detail = 'user_not_found', hint = 'Sign in again.';
    end if;
end
$$;
comment on function eventlive.require_user(uuid, boolean) is
'Raises 401 user_not_found when the user is not in auth.users; p_lock (writers): key share lock to commit.';

-- 404 user_not_found: a user the call names as its argument (set_staff, chat_ban,
-- service_role's register) is not in auth.users. Not the caller's own user, which is
-- eventlive.require_user's 401. Its callers write a row that references the user: the
-- key share lock holds auth.users' row to commit, so no 23503 can escape.
create or replace function eventlive.require_named_user(p_user_id uuid)
returns void
language plpgsql volatile set search_path = '' as $$
begin
    perform from auth.users as u where u.id = p_user_id for key share;
    if not found then
        raise exception using errcode = 'PT404', message = 'This user does not exist.', detail = 'user_not_found';
    end if;
end
$$;
comment on function eventlive.require_named_user(uuid) is
'Raises 404 user_not_found when the user a call names is not in auth.users; key share lock to commit.';

-- The call prologue, one place for its errors. Every function that needs a signed-in
-- caller, a webinar or an open entry asks these helpers (the heartbeat excepted:
-- api.track_access and eventlive.ping_core keep theirs inline, see their files), so
-- each reason has one SQLSTATE and one message wherever it is raised. A helper can
-- raise each error it raises whatever its arguments (no flag turns a check off): the
-- errors of a function are those of its body and of the helpers it calls, which
-- tests/sql/test_error_lists.py checks against each function's comment.

-- 401 not_authenticated unless the request has a user (p_service_ok: or runs as
-- service_role). Returns auth.uid(), null only for service_role. p_to finishes the
-- message: 'Sign in to <p_to>.'
create or replace function eventlive.require_sign_in(p_to text, p_service_ok boolean default false)
returns uuid
language plpgsql stable set search_path = '' as $$
declare
    v_uid uuid := auth.uid();
begin
    if v_uid is null and not (p_service_ok and eventlive.is_service_role()) then
        raise exception using errcode = 'PT401', message = 'Sign in to ' || p_to || '.',
            detail = 'not_authenticated';
    end if;
    return v_uid;
end
$$;
comment on function eventlive.require_sign_in(text, boolean) is
'Returns auth.uid(); raises 401 not_authenticated (''Sign in to <p_to>.'') without a user, unless p_service_ok and service_role.';

-- The webinar a call names, or 404 webinar_not_found. p_lock (writers of rows that
-- reference the webinar): a key share lock holds the row to commit, so no 23503 can
-- escape. Volatile for the lock, as eventlive.require_user; no table write.
create or replace function eventlive.require_webinar(p_webinar_id bigint, p_lock boolean default false)
returns eventlive.webinars
language plpgsql volatile set search_path = '' as $$
declare
    v_webinar eventlive.webinars;
begin
    if p_lock then
        select w.* into v_webinar from eventlive.webinars as w where w.id = p_webinar_id for key share;
    else
        select w.* into v_webinar from eventlive.webinars as w where w.id = p_webinar_id;
    end if;
    if not found then
        raise exception using errcode = 'PT404', message = 'This webinar does not exist.',
            detail = 'webinar_not_found';
    end if;
    return v_webinar;
end
$$;
comment on function eventlive.require_webinar(bigint, boolean) is
'Returns the webinar; raises 404 webinar_not_found. p_lock (writers): key share lock to commit.';

-- 403 webinar_closed unless entry to the webinar is open at p_at (eventlive.entry_open).
-- Its own helper: some callers check entry later in their order than the lookup
-- (register), or on a webinar reached through a row that references it (question_vote).
create or replace function eventlive.require_entry_open(p_webinar eventlive.webinars, p_at timestamptz)
returns void
language plpgsql immutable set search_path = '' as $$
begin
    if not eventlive.entry_open(p_webinar.state, p_webinar.closes_at, p_at) then
        raise exception using errcode = 'PT403', message = 'This webinar is not open.', detail = 'webinar_closed';
    end if;
end
$$;
comment on function eventlive.require_entry_open(eventlive.webinars, timestamptz) is
'Raises 403 webinar_closed unless the webinar admits viewers at p_at.';

-- The size of a page: 400 invalid_max_rows unless max_rows is 1..1000.
create or replace function eventlive.check_max_rows(p_max_rows integer)
returns void
language plpgsql immutable set search_path = '' as $$
begin
    if p_max_rows is null or p_max_rows not between 1 and 1000 then
        raise exception using errcode = '22023', message = 'max_rows must be between 1 and 1000.',
            detail = 'invalid_max_rows';
    end if;
end
$$;
comment on function eventlive.check_max_rows(integer) is
'Raises 400 invalid_max_rows unless max_rows is 1..1000.';

-- A page of a seq cursor: 400 invalid_after_seq unless after_seq is 0 or more, then
-- the page size (eventlive.check_max_rows).
create or replace function eventlive.check_page(p_after_seq bigint, p_max_rows integer)
returns void
language plpgsql immutable set search_path = '' as $$
begin
    if p_after_seq is null or p_after_seq < 0 then
        raise exception using errcode = '22023', message = 'after_seq must be 0 or a seq from an earlier answer.',
            detail = 'invalid_after_seq';
    end if;
    perform eventlive.check_max_rows(p_max_rows);
end
$$;
comment on function eventlive.check_page(bigint, integer) is
'Raises 400 invalid_after_seq (null or negative), then invalid_max_rows (not 1..1000).';

-- The staff check, for a webinar known to exist: nothing for service_role, else 401
-- without a user, 403 not_staff unless staff of it (401 user_not_found when the user
-- no longer exists). Returns the caller's user id (null for service_role).
create or replace function eventlive.require_staff_of(p_webinar_id bigint)
returns uuid
language plpgsql stable set search_path = '' as $$
declare
    v_uid uuid;
begin
    if eventlive.is_service_role() then
        return null;
    end if;
    v_uid := eventlive.require_sign_in('call this function');
    if not exists (
        select from eventlive.webinar_staff as s
        where s.webinar_id = p_webinar_id and s.user_id = v_uid
    ) then
        perform eventlive.require_user(v_uid, false);
        raise exception using errcode = 'PT403', message = 'Only the staff of this webinar may do this.',
            detail = 'not_staff';
    end if;
    return v_uid;
end
$$;
comment on function eventlive.require_staff_of(bigint) is
'Raises 401/403 (not_authenticated, not_staff; user_not_found for a deleted user) unless the caller is staff of the webinar or service_role.';

-- The staff gate of the admin functions: 404 for an unknown webinar, then the staff
-- check (eventlive.require_staff_of). Returns the webinar.
create or replace function eventlive.require_staff(p_webinar_id bigint)
returns eventlive.webinars
language plpgsql stable set search_path = '' as $$
declare
    v_webinar eventlive.webinars := eventlive.require_webinar(p_webinar_id);
begin
    perform eventlive.require_staff_of(p_webinar_id);
    return v_webinar;
end
$$;
comment on function eventlive.require_staff(bigint) is
'Raises 404/401/403 (webinar_not_found, not_authenticated, not_staff; user_not_found for a deleted user) unless the caller is staff of the webinar or service_role.';
