-- staff_webinar_ids() is security definer: a policy on webinar_staff that read
-- webinar_staff itself would recurse.
drop policy if exists "Staff see the staff of the webinars they run" on eventlive.webinar_staff;
create policy "Staff see the staff of the webinars they run"
on eventlive.webinar_staff
for select
to authenticated
using (user_id = (select auth.uid()) or webinar_id in (select eventlive.staff_webinar_ids()));
