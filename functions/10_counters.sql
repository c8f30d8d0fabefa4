-- Registration and unique-viewer counts for access_stats, kept by a trigger so that
-- every path (functions, service_role DML, cascades) keeps them right. Only real
-- changes fire it: a re-track of an entered registrant writes nothing here.
-- Append-only (sql/0011): each change is an inserted row of webinar_counter_deltas, not
-- an update of a counter row, so no entry holds a counter row lock to commit and
-- entries never wait for each other here (a join storm's 20,000 entries queued on 8
-- shard rows before). Readers sum webinar_counters and the deltas; housekeeping folds
-- the deltas into webinar_counters (eventlive.fold_counter_deltas).
-- Invoker rights suffice: the writers of registrations are the security definer api
-- functions (as owner) and service_role, which may write webinar_counter_deltas itself.
create or replace function eventlive.count_registrations() returns trigger
language plpgsql volatile set search_path = '' as $$
declare
    v_registrations integer := 0;
    v_viewers integer := 0;
    v_webinar_id bigint;
begin
    if tg_op = 'UPDATE'
        and (new.webinar_id <> old.webinar_id or new.user_id <> old.user_id) then
        raise exception using errcode = '22023', message = 'A registration''s webinar and user cannot change.',
            detail = 'registration_key_immutable';
    end if;
    if tg_op = 'INSERT' then
        v_webinar_id := new.webinar_id;
        v_registrations := 1;
        v_viewers := (new.first_entered_at is not null)::integer;
    elsif tg_op = 'DELETE' then
        v_webinar_id := old.webinar_id;
        v_registrations := -1;
        v_viewers := -((old.first_entered_at is not null)::integer);
    else
        v_webinar_id := new.webinar_id;
        v_viewers := (new.first_entered_at is not null)::integer - (old.first_entered_at is not null)::integer;
    end if;
    if v_registrations = 0 and v_viewers = 0 then
        return null;
    end if;
    if tg_op = 'DELETE' and not exists (select from eventlive.webinars as w where w.id = v_webinar_id) then
        -- The cascade of a webinar's own delete: its counters and deltas go with it,
        -- there is nothing to keep (and a delta would reference the deleted webinar).
        return null;
    end if;
    insert into eventlive.webinar_counter_deltas (webinar_id, registrations, unique_viewers)
    values (v_webinar_id, v_registrations, v_viewers);
    return null;
end
$$;
comment on function eventlive.count_registrations() is
'Trigger: each change of eventlive.registrations'' counts becomes a row of eventlive.webinar_counter_deltas (append-only; summed with webinar_counters on read).';

drop trigger if exists registrations_counted on eventlive.registrations;
create trigger registrations_counted
after insert or delete or update of first_entered_at, webinar_id, user_id on eventlive.registrations
for each row execute function eventlive.count_registrations();
