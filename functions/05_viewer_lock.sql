-- The viewer lock: one transaction at a time may change one viewer's registration,
-- session and presence in one webinar (track_access, presence_leave). A transaction-scoped
-- advisory lock on the (webinar, viewer) pair, in the two-int4 key space so that it never
-- meets a one-bigint advisory lock; 200 tabs entering at once queue here and end with one
-- registration and one active session.
-- Invoker rights: only the security definer api functions call it (no grant).
create or replace function eventlive.lock_viewer(p_webinar_id bigint, p_user_id uuid)
returns void
language sql volatile set search_path = '' as $$
    select pg_catalog.pg_advisory_xact_lock(
        (p_webinar_id % 2147483647)::integer, pg_catalog.hashtext(p_user_id::text)
    )
$$;
comment on function eventlive.lock_viewer(bigint, uuid) is
'Waits for, then holds until the end of the transaction, the lock on one viewer of one webinar.';
