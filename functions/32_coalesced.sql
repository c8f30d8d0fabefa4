-- Coalesced heartbeats: the shim sends the concurrent pings of many verified viewers as
-- one statement (one transaction, one round trip, one commit) instead of one each.
-- Each element runs eventlive.ping_core, the very logic of api.presence_ping, and gets
-- its own answer: the result object names, by 1-based position, the elements that failed
-- with their PostgREST error body, built from eventlive.ping_error as api.presence_ping
-- raises it; an element not named was accepted (204). All accepted: '{}'.
-- Who may call it: only eventlive_batcher (sql/0007), a NOLOGIN role granted to
-- authenticator alone; no token can name it and eventlive is never an exposed schema.
-- The user ids are the shim's verified token subjects, not client input.
-- Elements are processed in (webinar, user) order so that two batches touching the same
-- presence rows take their row locks in the same order (no deadlock between batches).
-- Security definer: the batcher role itself may read and write nothing.
create or replace function eventlive.presence_ping_batch(
    p_webinar_ids bigint[], p_user_ids uuid[], p_session_ids uuid[]
)
returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_now timestamptz := eventlive.now();
    v_out jsonb := '{}';
    v_item record;
    v_reason text;
    v_error record;
begin
    -- As in api.presence_ping: a lost heartbeat is replaced by the next one.
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
    for v_item in
        select u.webinar_id, u.user_id, u.session_id, u.i
        from unnest(p_webinar_ids, p_user_ids, p_session_ids) with ordinality as u (webinar_id, user_id, session_id, i)
        order by u.webinar_id, u.user_id, u.i
    loop
        v_reason := eventlive.ping_core(v_item.webinar_id, v_item.user_id, v_item.session_id, v_now);
        if v_reason is not null then
            select e.sqlstate, e.message, e.hint into v_error from eventlive.ping_error(v_reason) as e;
            v_out := v_out || pg_catalog.jsonb_build_object(
                v_item.i::text, pg_catalog.jsonb_build_object(
                    'code', v_error.sqlstate, 'message', v_error.message,
                    'details', v_reason, 'hint', v_error.hint
                )
            );
        end if;
    end loop;
    return v_out;
end
$$;
comment on function eventlive.presence_ping_batch(bigint[], uuid[], uuid[]) is
'Heartbeats of many verified viewers in one statement (the shim''s coalesced path): the error body of each failed element by position; {} when all were accepted.';
grant execute on function eventlive.presence_ping_batch(bigint[], uuid[], uuid[]) to eventlive_batcher;

-- Coalesced entries: the shim sends the concurrent track_access calls of many verified
-- viewers (entries and re-confirmations) as one statement. Each element runs
-- eventlive.track_core, the very logic of api.track_access, and gets its own answer, by
-- 1-based position: {"ok": <what api.track_access returns>}; {"error": {code, message,
-- details, hint}}, the PostgREST body of the error api.track_access would raise (our own
-- errors: SQLSTATE PTnnn, or 22023 with a reason in details); or {"alone": true} for any
-- other failure, which the shim then sends alone to api.track_access, so that its answer
-- is exactly the single path's. Every element is answered.
-- Each element runs in its own subtransaction (a begin ... exception block): a failed
-- element's writes are rolled back, the others' kept. PostgreSQL caches 64 subtransaction
-- ids per transaction; past that every snapshot in the cluster gets slower (suboverflow),
-- so a batch holds at most 50 elements (the shim caps its batches there; a larger one is
-- refused whole, 22023 batch_too_large, and the shim sends its elements alone).
-- Durable as api.track_access (the default synchronous_commit).
-- Who may call it: only eventlive_batcher (sql/0007), as for presence_ping_batch; the
-- user ids are the shim's verified token subjects (a null one answers not_authenticated).
--
-- Deadlock-free against other batches, single calls (track_access, presence_ping and
-- presence_leave, ping batches) and housekeeping: every lock that can be waited for is
-- taken in one global order, by every transaction that takes more than one:
--   1. viewer locks (advisory, eventlive.lock_viewer's key): all of the batch's first,
--      in key order (eventlive.lock_viewers; a single call takes one, first);
--   2. the rows of users named by more than one element, key share, in user order (a
--      user delete locks the user's row before its cascade takes the user's other rows;
--      an element met only once locks its user's row before any of that viewer's rows);
--   3. each viewer's rows (registration, presence, then its sessions), viewer after
--      viewer in (webinar_id, user_id) order, as presence_ping_batch locks presence rows;
--      within a viewer, presence before session rows, as housekeeping's expiry (which
--      skips locked presence rows) and presence_leave take them;
--   4. the webinars' room seq rows (eventlive.publish, for the superseded devices), after
--      every element, in webinar order; a single call publishes last too.
-- Not waited for: the webinar row that record_presence_minute takes (skip locked); the
-- webinar and user rows the foreign keys key-share lock (these conflict only with their
-- deletion); counter rows (append-only inserts, sql/0011); access_log inserts. A viewer's
-- rows are locked only under its viewer lock (housekeeping and heartbeats excepted: they
-- lock presence rows without waiting for anything else first). Two ways to close a cycle
-- remain, outside this order, neither from the API: two viewers sending the same
-- never-seen session id at once (an insert waits for the other's), and a delete of
-- several users or of a live webinar in one statement (its cascade locks in its own
-- order). PostgreSQL detects such a cycle and fails one waiter (40P01): an element here
-- then answers {"alone": true}.
-- Security definer: the batcher role itself may read and write nothing.
create or replace function eventlive.track_access_batch(
    p_webinar_ids bigint[], p_user_ids uuid[], p_session_ids uuid[], p_clients jsonb[]
)
returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_now timestamptz := eventlive.now();
    v_size integer := coalesce(pg_catalog.cardinality(p_webinar_ids), 0);
    -- each element's answer, by position: the object is built once at the end (an
    -- object grown element by element is copied whole each time: 6 % of a batch's CPU)
    v_positions text[] := '{}';
    v_answers jsonb[] := '{}';
    v_item record;
    v_answer jsonb;
    v_told_webinars bigint[] := '{}';
    v_told_users uuid[] := '{}';
    v_told_answers jsonb[] := '{}';
    v_state text;
    v_message text;
    v_detail text;
    v_hint text;
begin
    if v_size > 50 then
        raise exception using errcode = '22023', message = 'At most 50 entries per batch.',
            detail = 'batch_too_large';
    end if;
    if coalesce(pg_catalog.cardinality(p_user_ids), 0) <> v_size
        or coalesce(pg_catalog.cardinality(p_session_ids), 0) <> v_size
        or coalesce(pg_catalog.cardinality(p_clients), 0) <> v_size then
        raise exception using errcode = '22023', message = 'The four arrays must have one element per entry.',
            detail = 'invalid_batch';
    end if;

    perform eventlive.lock_viewers(p_webinar_ids, p_user_ids);
    perform from auth.users as u
    where u.id in (
        select x.user_id from unnest(p_user_ids) as x (user_id)
        group by x.user_id having pg_catalog.count(*) > 1
    )
    order by u.id
    for key share;

    for v_item in
        select u.webinar_id, u.user_id, u.session_id, u.client, u.i
        from unnest(p_webinar_ids, p_user_ids, p_session_ids, p_clients)
            with ordinality as u (webinar_id, user_id, session_id, client, i)
        order by u.webinar_id, u.user_id, u.i
    loop
        begin
            v_answer := eventlive.track_core(v_item.webinar_id, v_item.user_id, v_item.session_id, v_item.client, v_now);
            if v_answer ->> 'superseded_session_id' is not null then
                -- in webinar order already: the elements run in that order
                v_told_webinars := pg_catalog.array_append(v_told_webinars, v_item.webinar_id);
                v_told_users := pg_catalog.array_append(v_told_users, v_item.user_id);
                v_told_answers := pg_catalog.array_append(v_told_answers, v_answer);
            end if;
            v_answer := pg_catalog.jsonb_build_object('ok', v_answer);
        exception when others then
            get stacked diagnostics v_state = returned_sqlstate, v_message = message_text,
                v_detail = pg_exception_detail, v_hint = pg_exception_hint;
            if v_state ~ '^PT[0-9]{3}$' or (v_state = '22023' and v_detail <> '') then
                v_answer := pg_catalog.jsonb_build_object('error', pg_catalog.jsonb_build_object(
                    'code', v_state, 'message', v_message,
                    'details', nullif(v_detail, ''), 'hint', nullif(v_hint, '')
                ));
            else
                v_answer := pg_catalog.jsonb_build_object('alone', true);
            end if;
        end;
        v_positions := pg_catalog.array_append(v_positions, v_item.i::text);
        v_answers := pg_catalog.array_append(v_answers, v_answer);
    end loop;

    for i in 1 .. pg_catalog.cardinality(v_told_answers) loop
        perform eventlive.tell_superseded(v_told_webinars[i], v_told_users[i], v_told_answers[i]);
    end loop;
    return (
        select coalesce(pg_catalog.jsonb_object_agg(a.position, a.answer), '{}')
        from unnest(v_positions, v_answers) as a (position, answer)
    );
end
$$;
comment on function eventlive.track_access_batch(bigint[], uuid[], uuid[], jsonb[]) is
'Entries and re-confirmations of up to 50 verified viewers in one statement (the shim''s batched path): by 1-based position, {ok: api.track_access''s answer}, {error: its PostgREST error body} or {alone: true} (send that one alone).';
grant execute on function eventlive.track_access_batch(bigint[], uuid[], uuid[], jsonb[]) to eventlive_batcher;
