-- A presence minute: the concurrent-viewer count of a webinar in one minute, behind the
-- access_stats timeline (eventlive.presence_minutes). presence_ping and track_access call
-- this when the webinar row they already read (its sampled_minute) says this minute has
-- none yet: one caller per webinar per minute counts the present viewers (skip locked, so
-- the others never wait); every other call and every admin poll costs nothing here.
-- Invoker rights: only the security definer api functions call it (no grant).
create or replace function eventlive.record_presence_minute(p_webinar_id bigint, p_at timestamptz)
returns void
language plpgsql volatile set search_path = '' as $$
declare
    v_minute timestamptz := pg_catalog.date_trunc('minute', p_at);
    v_heartbeat integer;
    v_since timestamptz;
begin
    select w.heartbeat_seconds into v_heartbeat
    from eventlive.webinars as w
    where w.id = p_webinar_id and (w.sampled_minute is null or w.sampled_minute < v_minute)
    for no key update skip locked;
    if not found then
        return;  -- sampled already, or another call is sampling right now
    end if;
    -- Once, not per row: the helper is not inlined (it pins search_path).
    v_since := p_at - eventlive.presence_window(v_heartbeat);
    insert into eventlive.presence_minutes as m (webinar_id, minute, viewers)
    select p_webinar_id, v_minute, pg_catalog.count(*)
    from eventlive.presence as p
    where p.webinar_id = p_webinar_id
        and p.last_seen_at > v_since
    on conflict (webinar_id, minute) do update set viewers = excluded.viewers;
    update eventlive.webinars as w set sampled_minute = v_minute where w.id = p_webinar_id;
end
$$;
comment on function eventlive.record_presence_minute(bigint, timestamptz) is
'Stores the concurrent-viewer count of a webinar for the current minute, at most once per minute.';
