-- Registration and unique-viewer counts for access_stats, kept by a trigger so that
-- every path (functions, service_role DML, cascades) keeps them right. Only real
-- changes fire it: a re-track of an entered registrant writes nothing here.
-- Invoker rights suffice: the writers of registrations are the security definer api
-- functions (as owner) and service_role, which may write webinar_counters itself.
create or replace function eventlive.count_registrations() returns trigger
language plpgsql volatile set search_path = '' as $$
declare
    v_registrations integer := 0;
    v_viewers integer := 0;
    v_webinar_id bigint;
    v_shard smallint;
begin
    if tg_op = 'UPDATE'
        and (new.webinar_id <> old.webinar_id or new.user_id <> old.user_id) then
        raise exception using errcode = '22023', message = 'A registration''s webinar and user cannot change.',
            detail = 'registration_key_immutable';
    end if;
    if tg_op = 'INSERT' then
        v_webinar_id := new.webinar_id;
        v_shard := pg_catalog.hashtext(new.user_id::text) & 7;
        v_registrations := 1;
        v_viewers := (new.first_entered_at is not null)::integer;
    elsif tg_op = 'DELETE' then
        v_webinar_id := old.webinar_id;
        v_shard := pg_catalog.hashtext(old.user_id::text) & 7;
        v_registrations := -1;
        v_viewers := -((old.first_entered_at is not null)::integer);
    else
        v_webinar_id := new.webinar_id;
        v_shard := pg_catalog.hashtext(new.user_id::text) & 7;
        v_viewers := (new.first_entered_at is not null)::integer - (old.first_entered_at is not null)::integer;
    end if;
    if v_registrations = 0 and v_viewers = 0 then
        return null;
    end if;
    if tg_op = 'DELETE' then
        -- A plain update: when the webinar itself is being deleted its counters are
        -- already gone and there is nothing to keep.
        update eventlive.webinar_counters as c
        set registrations = c.registrations + v_registrations,
            unique_viewers = c.unique_viewers + v_viewers
        where c.webinar_id = v_webinar_id and c.shard = v_shard;
    else
        insert into eventlive.webinar_counters as c (webinar_id, shard, registrations, unique_viewers)
        values (v_webinar_id, v_shard, v_registrations, v_viewers)
        on conflict (webinar_id, shard) do update
        set registrations = c.registrations + excluded.registrations,
            unique_viewers = c.unique_viewers + excluded.unique_viewers;
    end if;
    return null;
end
$$;
comment on function eventlive.count_registrations() is
'Trigger: keeps eventlive.webinar_counters in step with eventlive.registrations.';

drop trigger if exists registrations_counted on eventlive.registrations;
create trigger registrations_counted
after insert or delete or update of first_entered_at, webinar_id, user_id on eventlive.registrations
for each row execute function eventlive.count_registrations();
