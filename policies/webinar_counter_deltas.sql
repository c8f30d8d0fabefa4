-- Unfolded counter changes (sql/0011): staff of the webinar read them, as they read
-- webinar_counters, so that counters plus deltas is the count whoever sums them. Written
-- only by the trigger on registrations and by housekeeping's fold.
drop policy if exists "Staff see the counter changes of their webinars" on eventlive.webinar_counter_deltas;
create policy "Staff see the counter changes of their webinars"
on eventlive.webinar_counter_deltas
for select
to authenticated
using (webinar_id in (select eventlive.staff_webinar_ids()));
