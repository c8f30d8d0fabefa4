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
