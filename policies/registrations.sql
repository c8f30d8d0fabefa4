-- Viewers see their own rows, staff their webinars' rows; writes only through api.
drop policy if exists "Viewers see their own rows and staff their webinars' rows" on eventlive.registrations;
create policy "Viewers see their own rows and staff their webinars' rows"
on eventlive.registrations
for select
to authenticated
using (user_id = (select auth.uid()) or webinar_id in (select eventlive.staff_webinar_ids()));
