-- Rollups for access_stats: staff of the webinar only; written by eventlive functions.
drop policy if exists "Staff see the presence minutes of their webinars" on eventlive.presence_minutes;
create policy "Staff see the presence minutes of their webinars"
on eventlive.presence_minutes
for select
to authenticated
using (webinar_id in (select eventlive.staff_webinar_ids()));
