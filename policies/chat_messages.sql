-- Authors see their own messages, staff every message of their webinars (held, hidden and
-- deleted too). Viewers read the room through api.chat_since, which leaves out held
-- messages and shows hidden ones as tombstones. Writes only through api.
drop policy if exists "Authors see their own messages and staff their webinars' messages" on eventlive.chat_messages;
create policy "Authors see their own messages and staff their webinars' messages"
on eventlive.chat_messages
for select
to authenticated
using (user_id = (select auth.uid()) or webinar_id in (select eventlive.staff_webinar_ids()));
