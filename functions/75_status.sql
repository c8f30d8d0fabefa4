-- The operators' status page (shim/http/console): what its sampler reads from the
-- database every interval while a page is open, in one call. Live webinars with their
-- present viewers (seen within eventlive.presence_window, the rule access_stats and
-- housekeeping apply) and their entries in the last minute, the 50 largest first.
-- Security definer: the sampler calls it as service_role, which may not call the
-- presence window helper itself (no grant); only service_role may call this.
create or replace function eventlive.status_sample()
returns table (webinar_id bigint, title text, viewers bigint, entries bigint)
language sql stable security definer set search_path = '' as $$
    with live as materialized (
        -- once per webinar, not per presence row: the helpers are not inlined
        select
            w.id,
            w.title,
            eventlive.now() - eventlive.presence_window(w.heartbeat_seconds) as seen_since,
            eventlive.now() - interval '1 minute' as entered_since
        from eventlive.webinars as w
        where w.state = 'live'
    )

    select
        l.id,
        l.title,
        (
            select pg_catalog.count(*) from eventlive.presence as p
            where p.webinar_id = l.id and p.last_seen_at > l.seen_since
        ) as viewers,
        (
            select pg_catalog.count(*) from eventlive.viewer_sessions as s
            where s.webinar_id = l.id and s.started_at > l.entered_since
        ) as entries
    from live as l
    order by viewers desc, l.id
    limit 50
$$;
comment on function eventlive.status_sample() is
'The status page''s database read (service_role): live webinars with their present viewers (eventlive.presence_window) and entries in the last minute, most viewers first, at most 50.';
grant execute on function eventlive.status_sample() to service_role;
