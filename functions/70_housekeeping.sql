-- Housekeeping: sessions whose viewer stopped pinging are ended
-- ('expired'), history is removed after its retention, and the registration counters'
-- deltas are folded into the counters. One call is one short batch in its own
-- transaction; the runner (shim/serve/housekeeping.py, or pg_cron) calls again while
-- there is work. Nothing here waits for the hot path or makes it wait for long:
--   * rows are taken with FOR UPDATE SKIP LOCKED: a heartbeat in flight keeps its row,
--     and the sweep passes over it;
--   * a heartbeat that commits before the sweep locks its row is seen (READ COMMITTED
--     re-checks the condition on the newest version), so its session is not ended;
--   * the locks taken are row locks on stale presence rows, on old history rows and on
--     counter deltas, which no hot-path call locks, held for one batch (and key share
--     locks on webinar rows, which the hot path's locks on them do not conflict with);
--   * one runner at a time across processes and nodes: each batch first takes a
--     transaction-level advisory lock with pg_try_advisory_xact_lock and returns null
--     without doing anything when another batch holds it.

-- Ends up to p_batch sessions whose last heartbeat is older than their webinar's
-- presence window: the presence row goes, the session gets ended_at = its last
-- heartbeat and end_reason 'expired'. Returns the number ended.
create or replace function eventlive.expire_sessions(p_now timestamptz, p_batch integer)
returns integer
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_ended integer;
begin
    with cutoff as materialized (
        -- once per webinar, not per row: the helper is not inlined
        select w.id, p_now - eventlive.presence_window(w.heartbeat_seconds) as seen_before
        from eventlive.webinars as w
    ),
    stale as (
        select p.webinar_id, p.user_id
        from eventlive.presence as p
        inner join cutoff as c on p.webinar_id = c.id
        where p.last_seen_at < c.seen_before
        limit p_batch
        for update of p skip locked
    ),
    gone as (
        delete from eventlive.presence as p
        using stale as s
        where p.webinar_id = s.webinar_id and p.user_id = s.user_id
        returning p.session_id, p.last_seen_at
    ),
    ended as (
        update eventlive.viewer_sessions as vs
        set ended_at = g.last_seen_at, end_reason = 'expired'
        from gone as g
        where vs.session_id = g.session_id and vs.ended_at is null
        returning vs.session_id
    )
    select pg_catalog.count(*)::integer into v_ended from gone;
    return v_ended;
end
$$;
comment on function eventlive.expire_sessions(timestamptz, integer) is
'Housekeeping: ends up to p_batch sessions not seen within their webinar''s presence window (end_reason expired); skips rows a heartbeat holds.';

-- Removes up to p_batch rows per history table older than p_keep_since. The tables and
-- their time column are listed here: adding a table (chat history) is one line of the
-- values list; a table that does not exist (yet) is skipped.
create or replace function eventlive.prune_history(p_keep_since timestamptz, p_batch integer)
returns integer
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_table regclass;
    v_column text;
    v_rows integer;
    v_total integer := 0;
begin
    for v_table, v_column in
        select pg_catalog.to_regclass(t.name), t.time_column
        from (values
            ('eventlive.access_log', 'at')
        ) as t (name, time_column)
        where pg_catalog.to_regclass(t.name) is not null
    loop
        execute pg_catalog.format(
            'delete from %1$s where ctid = any (array('
            'select h.ctid from %1$s as h where h.%2$I < $1 limit $2 for update skip locked))',
            v_table, v_column
        ) using p_keep_since, p_batch;
        get diagnostics v_rows = row_count;
        v_total := v_total + v_rows;
    end loop;
    return v_total;
end
$$;
comment on function eventlive.prune_history(timestamptz, integer) is
'Housekeeping: deletes up to p_batch rows older than p_keep_since from each history table (access_log; one line per table).';

-- Removes up to p_batch rows per table of short-lived live-room state (sql/0009): large
-- broadcasts a minute after they were sent (every hub has read them by then), used SSE
-- tickets a minute after they expired (by then every process refuses them as expired,
-- even with its clock a little off the database's). Returns the number removed.
create or replace function eventlive.prune_room_state(p_now timestamptz, p_batch integer)
returns integer
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_rows integer;
    v_total integer;
begin
    delete from eventlive.room_broadcasts as b
    where b.id = any(array(
        select o.id from eventlive.room_broadcasts as o
        where o.created_at < p_now - interval '1 minute'
        order by o.id limit p_batch for update skip locked
    ));
    get diagnostics v_total = row_count;
    delete from eventlive.sse_tickets_used as t
    where t.nonce = any(array(
        select u.nonce from eventlive.sse_tickets_used as u
        where u.expires_at < p_now - interval '1 minute'
        limit p_batch for update skip locked
    ));
    get diagnostics v_rows = row_count;
    return v_total + v_rows;
end
$$;
comment on function eventlive.prune_room_state(timestamptz, integer) is
'Housekeeping: deletes up to p_batch large broadcasts older than a minute and up to p_batch SSE tickets a minute past their expiry.';

-- Folds up to p_batch counter deltas (sql/0011) into webinar_counters, shard 0 (the
-- other shards hold what the trigger counted before the deltas). Returns the number
-- folded. Safe against concurrent inserts and exact for readers: the delete ... returning
-- and the upsert of the sums are one statement, so a reader (api.access_stats sums
-- counters and deltas with one snapshot) sees each delta either in the deltas or in the
-- counter; a delta inserted while this runs is not in this statement's snapshot and stays
-- for the next fold. Nobody else locks deltas, so skip locked only guards against a
-- second fold. A webinar being deleted is left out: its rows are first taken with a key
-- share lock, skip locked, so the fold never holds a delta of a webinar whose delete it
-- would wait for (the delete's cascade takes the deltas after the webinar row).
create or replace function eventlive.fold_counter_deltas(p_batch integer)
returns integer
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_webinars bigint[];
    v_folded integer;
begin
    select pg_catalog.array_agg(l.id) into v_webinars
    from (
        select w.id from eventlive.webinars as w
        where w.id in (select d.webinar_id from eventlive.webinar_counter_deltas as d)
        for key share of w skip locked
    ) as l;
    with taken as (
        delete from eventlive.webinar_counter_deltas as d
        where d.ctid = any(array(
            select o.ctid from eventlive.webinar_counter_deltas as o
            where o.webinar_id = any(v_webinars)
            limit p_batch for update skip locked
        ))
        returning d.webinar_id, d.registrations, d.unique_viewers
    ),
    sums as (
        select
            t.webinar_id, pg_catalog.count(*) as folded,
            pg_catalog.sum(t.registrations) as registrations, pg_catalog.sum(t.unique_viewers) as unique_viewers
        from taken as t
        group by t.webinar_id
    ),
    added as (
        insert into eventlive.webinar_counters as c (webinar_id, shard, registrations, unique_viewers)
        select s.webinar_id, 0, s.registrations, s.unique_viewers from sums as s
        on conflict (webinar_id, shard) do update
        set registrations = c.registrations + excluded.registrations,
            unique_viewers = c.unique_viewers + excluded.unique_viewers
    )
    select coalesce(pg_catalog.sum(s.folded), 0)::integer into v_folded from sums as s;
    return v_folded;
end
$$;
comment on function eventlive.fold_counter_deltas(integer) is
'Housekeeping: folds up to p_batch rows of webinar_counter_deltas into webinar_counters in one statement (readers see each change exactly once, before and after); returns how many.';

-- One batch of everything, for one runner at a time: null when another runner's batch
-- holds the lock (that runner works; this one waits for its next tick), else what was
-- done. The caller repeats while a count reached p_batch.
create or replace function eventlive.housekeeping_step(
    p_retention interval default '30 days', p_batch integer default 1000
) returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_now timestamptz := eventlive.now();
begin
    if p_batch is null or p_batch not between 1 and 100000 then
        raise exception using errcode = '22023', message = 'p_batch must be between 1 and 100000.',
            detail = 'invalid_batch';
    end if;
    if p_retention is null or p_retention < interval '1 hour' then
        raise exception using errcode = '22023', message = 'p_retention must be at least 1 hour.',
            detail = 'invalid_retention';
    end if;
    if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('eventlive.housekeeping')) then
        return null;
    end if;
    return pg_catalog.jsonb_build_object(
        'expired', eventlive.expire_sessions(v_now, p_batch),
        'pruned', eventlive.prune_history(v_now - p_retention, p_batch)
            + eventlive.prune_room_state(v_now, p_batch),
        'folded', eventlive.fold_counter_deltas(p_batch)
    );
end
$$;
comment on function eventlive.housekeeping_step(interval, integer) is
'Housekeeping batch: expires stale sessions, prunes history older than p_retention and spent live-room state (large broadcasts, used SSE tickets), folds counter deltas into the counters, p_batch rows at most each; null when another runner holds the housekeeping lock. Returns {expired, pruned, folded}.';
grant execute on function eventlive.housekeeping_step(interval, integer) to service_role;
