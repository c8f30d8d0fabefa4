-- Admin reads: staff of the webinar or service_role; anyone else 403 not_staff.
-- Security definer: staff read other viewers' rows through an explicit gate here
-- rather than through per-row policy checks on 100,000 rows.

-- current_participants is the count now: the webinar's presence rows seen within the
-- presence window, counted as eventlive.record_presence_minute counts them, along the
-- presence primary key's webinar range (no index on last_seen_at: heartbeats stay HOT
-- updates); sampled_at says when. That count grows with the viewers (12-22 ms at 100,000
-- present); the minute sample it replaced cost nothing but was up to a minute old (1
-- viewer shown right after 1,001 entered). The rest reads only the minute samples and the
-- counters. Stable (writes nothing), so the shim serves it by GET from a cache shared by
-- the webinar's staff (@readers, functions/45_readers.sql), and the live room pushes that
-- same answer: one database call per 5 s per webinar and shim process, whatever the
-- number of admins polling or subscribed, with an answer at most 5 s old.
-- peak_participants is the highest minute sample, or the count now when that is higher,
-- so never below current_participants (a peak only a count now saw is not recorded).
create or replace function api.access_stats(webinar_id bigint)
returns jsonb
language plpgsql stable security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_now timestamptz := eventlive.now();
    v_webinar eventlive.webinars := eventlive.require_staff(access_stats.webinar_id);
    -- Once, not per row: the helper is not inlined (it pins search_path).
    v_since timestamptz := v_now - eventlive.presence_window(v_webinar.heartbeat_seconds);
    v_result jsonb;
begin
    select pg_catalog.jsonb_build_object(
        'webinar_id', v_webinar.id,
        'current_participants', latest.viewers,
        'sampled_at', latest.counted_at,
        'peak_participants', greatest(peak.viewers, latest.viewers),
        'peak_at', case when latest.viewers > coalesce(peak.viewers, 0) then latest.counted_at else peak.minute end,
        'registrations', coalesce(counts.registrations, 0),
        'unique_viewers', coalesce(counts.unique_viewers, 0),
        'timeline', coalesce(timeline.points, '[]'::jsonb)
    ) into v_result
    from (
        -- the count now (one row, also when nobody is present)
        select pg_catalog.count(*)::integer as viewers, v_now as counted_at
        from eventlive.presence as p
        where p.webinar_id = v_webinar.id
            and p.last_seen_at > v_since
    ) as latest
    full join (
        select m.minute, m.viewers
        from eventlive.presence_minutes as m
        where m.webinar_id = v_webinar.id
        order by m.viewers desc, m.minute asc
        limit 1
    ) as peak on true
    full join (
        -- the folded counters plus the deltas not yet folded (sql/0011), one snapshot
        select pg_catalog.sum(c.registrations) as registrations, pg_catalog.sum(c.unique_viewers) as unique_viewers
        from (
            select k.registrations, k.unique_viewers
            from eventlive.webinar_counters as k
            where k.webinar_id = v_webinar.id
            union all
            select d.registrations, d.unique_viewers
            from eventlive.webinar_counter_deltas as d
            where d.webinar_id = v_webinar.id
        ) as c
    ) as counts on true
    full join (
        -- the last 24 hours, one point per sampled minute
        select pg_catalog.jsonb_agg(
            pg_catalog.jsonb_build_object('minute', m.minute, 'viewers', m.viewers) order by m.minute
        ) as points
        from eventlive.presence_minutes as m
        where m.webinar_id = v_webinar.id and m.minute > v_now - interval '24 hours'
    ) as timeline on true;
    return v_result;
end
$$;
comment on function api.access_stats(bigint) is
'Staff only: current_participants (the viewers present now, counted at sampled_at), peak_participants and peak_at (the highest minute sample, or the count now when higher), registrations, unique_viewers and timeline (viewers per minute, last 24 h). Errors: 401 not_authenticated, 404 webinar_not_found, 403 not_staff, 401 user_not_found.
@cache 5
@readers eventlive.staff_readers(webinar_id)
@returns {webinar_id: bigint, current_participants: integer, sampled_at: timestamptz, peak_participants: integer, peak_at: timestamptz|null, registrations: integer, unique_viewers: integer, timeline: [{minute: timestamptz, viewers: integer}]}';
grant execute on function api.access_stats(bigint) to authenticated, service_role;

-- Current viewers with their profile fields, keyset-paginated on user_id along the
-- presence primary key: pass the previous answer's next_after to get the next page.
create or replace function api.participants(
    webinar_id bigint,
    after uuid default null,
    max_rows integer default 100
) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_now timestamptz := eventlive.now();
    v_webinar eventlive.webinars := eventlive.require_staff(participants.webinar_id);
    v_since timestamptz := v_now - eventlive.presence_window(v_webinar.heartbeat_seconds);
    v_result jsonb;
begin
    perform eventlive.check_max_rows(participants.max_rows);
    select pg_catalog.jsonb_build_object(
        'participants', coalesce(pg_catalog.jsonb_agg(page.item order by page.user_id), '[]'::jsonb),
        'next_after', case
            when pg_catalog.count(*) = participants.max_rows
                then (pg_catalog.array_agg(page.user_id order by page.user_id desc))[1]
        end
    ) into v_result
    from (
        select
            p.user_id,
            pg_catalog.jsonb_build_object(
                'user_id', p.user_id,
                'session_id', p.session_id,
                'started_at', p.started_at,
                'last_seen_at', p.last_seen_at,
                'display_name', pr.display_name,
                'avatar_url', pr.avatar_url,
                'company', pr.company,
                'job_title', pr.job_title
            ) as item
        from eventlive.presence as p
        left join eventlive.profiles as pr on pr.user_id = p.user_id
        where p.webinar_id = v_webinar.id
            and (participants.after is null or p.user_id > participants.after)
            and p.last_seen_at > v_since
        order by p.user_id
        limit participants.max_rows
    ) as page;
    return v_result;
end
$$;
comment on function api.participants(bigint, uuid, integer) is
'Staff only: current viewers with profile fields, keyset-paginated by user_id (after = previous next_after; max_rows 1..1000). Returns {participants: [...], next_after}. Errors: 401 not_authenticated, 404 webinar_not_found, 403 not_staff, 401 user_not_found, 400 invalid_max_rows.
@returns {participants: [{user_id: uuid, session_id: uuid, started_at: timestamptz, last_seen_at: timestamptz, display_name: text|null, avatar_url: text|null, company: text|null, job_title: text|null}], next_after: uuid|null}';
grant execute on function api.participants(bigint, uuid, integer) to authenticated, service_role;

-- Many profiles in one call (the incident made one request per viewer). A caller sees
-- their own profile and those of the registrants of webinars they staff; service_role
-- sees all. Ids not visible or without a profile are left out, not an error.
create or replace function api.profiles_batch(user_ids uuid[])
returns jsonb
language plpgsql stable security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_uid uuid := eventlive.require_sign_in('read profiles', true);
    v_service boolean := eventlive.is_service_role();
    v_result jsonb;
begin
    if pg_catalog.cardinality(profiles_batch.user_ids) > 500 then
        raise exception using errcode = '22023', message = 'At most 500 user ids per call.',
            detail = 'too_many_ids', hint = 'Split the ids into batches of 500.';
    end if;
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
        'user_id', pr.user_id,
        'display_name', pr.display_name,
        'avatar_url', pr.avatar_url,
        'company', pr.company,
        'job_title', pr.job_title
    ) order by pr.user_id), '[]'::jsonb) into v_result
    from eventlive.profiles as pr
    where pr.user_id = any(profiles_batch.user_ids)
        and (
            v_service
            or pr.user_id = v_uid
            or exists (
                select from eventlive.webinar_staff as s
                inner join eventlive.registrations as r
                    on r.webinar_id = s.webinar_id and r.user_id = pr.user_id
                where s.user_id = v_uid
            )
        );
    return v_result;
end
$$;
comment on function api.profiles_batch(uuid[]) is
'Profiles of up to 500 users in one call: your own, and the registrants of webinars you staff (service_role: all). Returns a JSON array. Errors: 401 not_authenticated, 400 too_many_ids.
@returns [{user_id: uuid, display_name: text|null, avatar_url: text|null, company: text|null, job_title: text|null}]';
grant execute on function api.profiles_batch(uuid[]) to authenticated, service_role;
