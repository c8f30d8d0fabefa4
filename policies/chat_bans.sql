-- A banned viewer sees their own ban, staff the bans of their webinars. Writes only
-- through api.chat_ban / api.chat_unban.
drop policy if exists "Banned viewers see their own bans and staff their webinars' bans" on eventlive.chat_bans;
create policy "Banned viewers see their own bans and staff their webinars' bans"
on eventlive.chat_bans
for select
to authenticated
using (user_id = (select auth.uid()) or webinar_id in (select eventlive.staff_webinar_ids()));
