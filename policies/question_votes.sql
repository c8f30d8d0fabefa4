-- Viewers see their own votes, staff the votes of their webinars' questions; counts come
-- with api.questions. Writes only through api.question_vote.
drop policy if exists "Viewers see their own votes and staff their webinars' votes" on eventlive.question_votes;
create policy "Viewers see their own votes and staff their webinars' votes"
on eventlive.question_votes
for select
to authenticated
using (user_id = (select auth.uid()) or webinar_id in (select eventlive.staff_webinar_ids()));
