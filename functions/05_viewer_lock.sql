-- The viewer lock: one transaction at a time may change one viewer's registration,
-- session and presence in one webinar (track_access, presence_leave). A transaction-scoped
-- advisory lock on the (webinar, viewer) pair, in the two-int4 key space so that it never
-- meets a one-bigint advisory lock; 200 tabs entering at once queue here and end with one
-- registration and one active session.
-- Invoker rights: only the security definer api functions call it (no grant).
create or replace function eventlive.lock_viewer(p_webinar_id bigint, p_user_id uuid)
returns void
language plpgsql volatile set search_path = '' as $$
begin
    -- plpgsql, not sql: a sql function with a set clause is never inlined and is parsed
    -- and planned again on every call (perf: 10 % of an entry batch's CPU); plpgsql
    -- keeps the plan for the session.
    perform pg_catalog.pg_advisory_xact_lock(
        (p_webinar_id % 2147483647)::integer, pg_catalog.hashtext(p_user_id::text)
    );
end
$$;
comment on function eventlive.lock_viewer(bigint, uuid) is
'Waits for, then holds until the end of the transaction, the lock on one viewer of one webinar.';

-- The viewer locks of many viewers at once (eventlive.track_access_batch), in the order
-- of their key, the same key as eventlive.lock_viewer's: two batches then take the locks
-- they share in the same order. Ordering the viewers by (webinar, user) would not do:
-- the key is a 32-bit hash of the user, so two viewers of a webinar can share one (with
-- 20,000 viewers, some pair does about once in 20 webinars) and a (webinar, user) order
-- is then not an order of the locks. Pairs with a null are skipped (no lock to take).
-- Invoker rights: only the security definer batch calls it (no grant).
create or replace function eventlive.lock_viewers(p_webinar_ids bigint[], p_user_ids uuid[])
returns void
language plpgsql volatile set search_path = '' as $$
declare
    v_key record;
begin
    for v_key in
        select distinct (v.webinar_id % 2147483647)::integer as webinar_key, pg_catalog.hashtext(v.user_id::text) as user_key
        from unnest(p_webinar_ids, p_user_ids) as v (webinar_id, user_id)
        where v.webinar_id is not null and v.user_id is not null
        order by webinar_key, user_key
    loop
        perform pg_catalog.pg_advisory_xact_lock(v_key.webinar_key, v_key.user_key);
    end loop;
end
$$;
comment on function eventlive.lock_viewers(bigint[], uuid[]) is
'Waits for, then holds until the end of the transaction, the locks on many viewers (as eventlive.lock_viewer), taken in the order of their key.';
