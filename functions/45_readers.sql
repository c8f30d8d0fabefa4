-- Readers of shared answers. A function whose answer is the same for every caller who may
-- read it (a webinar's stats) names a readers function in its comment
-- (`@readers eventlive.staff_readers(webinar_id)`); the shim calls both together, once per
-- cache interval, and serves the answer from memory to the readers it names — so any
-- number of polling admins costs one database call per interval per webinar, with the
-- authorization decided here, by the database, and refreshed with the answer.
-- Security definer: the staff list is read past RLS, and only told to the webinar's own
-- staff (and service_role); anyone else gets null, which shares nothing.
create or replace function eventlive.staff_readers(webinar_id bigint)
returns jsonb
language sql stable security definer set search_path = '' as $$
    select pg_catalog.jsonb_build_object(
        'roles', pg_catalog.jsonb_build_array('service_role'),
        'users', coalesce(pg_catalog.jsonb_agg(s.user_id), '[]'::jsonb)
    )
    from eventlive.webinar_staff as s
    where s.webinar_id = staff_readers.webinar_id
    having eventlive.is_service_role()
        or pg_catalog.bool_or(s.user_id = (select auth.uid()))
$$;
comment on function eventlive.staff_readers(bigint) is
'Who may read the shared answers of a webinar''s staff functions (service_role and the staff), told only to them; null for anyone else.';
grant execute on function eventlive.staff_readers(bigint) to authenticated, service_role;

-- Readers of a live room's polled answers (chat_since, questions). Staff see held
-- messages, so staff and viewers read different answers: the readers are the caller's
-- class -- staff (service_role and the webinar's staff) or viewers (registered users who
-- are not staff) -- named in `class`, so the shim keeps one shared answer per class.
-- Anyone else gets null (their own call decides). The same rule as
-- eventlive.room_role_is_staff, which chat_since and questions apply to the caller.
-- Security definer: registrations and staff are read past RLS, and a class's members are
-- told only to a member of it.
create or replace function eventlive.room_readers(webinar_id bigint)
returns jsonb
language sql stable security definer set search_path = '' as $$
    select coalesce(
        -- the staff class: the staff readers (null unless the caller is one of them)
        eventlive.staff_readers(room_readers.webinar_id) || '{"class": "staff"}'::jsonb,
        case when exists (
            select from eventlive.registrations as r
            where r.webinar_id = room_readers.webinar_id and r.user_id = (select auth.uid())
        ) then pg_catalog.jsonb_build_object(
            'class', 'viewer',
            'roles', '[]'::jsonb,
            'users', (
                select coalesce(pg_catalog.jsonb_agg(r.user_id), '[]'::jsonb)
                from eventlive.registrations as r
                where r.webinar_id = room_readers.webinar_id
                    and not exists (
                        select from eventlive.webinar_staff as s
                        where s.webinar_id = r.webinar_id and s.user_id = r.user_id
                    )
            )
        ) end
    )
$$;
comment on function eventlive.room_readers(bigint) is
'Who may read the shared chat and Q&A answers of the caller''s class in a webinar (class staff: service_role and the staff; class viewer: registered non-staff users), told only to a member of that class; null for anyone else.';
grant execute on function eventlive.room_readers(bigint) to authenticated, service_role;
