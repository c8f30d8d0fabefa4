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
language sql
stable
security definer
set search_path = ''
as $$
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
