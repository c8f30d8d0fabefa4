-- Authors see their own questions, staff every question of their webinars (an anonymous
-- question's author too). Viewers read through api.questions, which hides anonymous
-- authors. Writes only through api.
drop policy if exists "Authors see their own questions and staff their webinars' questions" on eventlive.questions;
create policy "Authors see their own questions and staff their webinars' questions"
on eventlive.questions
for select
to authenticated
using (user_id = (select auth.uid()) or webinar_id in (select eventlive.staff_webinar_ids()));
