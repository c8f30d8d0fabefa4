-- Counters for access_stats: staff of the webinar read them; the trigger on registrations
-- (functions/10_counters.sql) writes them.
drop policy if exists "Staff see the webinar counters of their webinars" on eventlive.webinar_counters;
create policy "Staff see the webinar counters of their webinars"
on eventlive.webinar_counters
for select
to authenticated
using (webinar_id in (select eventlive.staff_webinar_ids()));
