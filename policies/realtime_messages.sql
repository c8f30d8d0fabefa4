-- The one place that decides who receives and who sends on a webinar's realtime topics.
-- Supabase's Realtime (and our hub, the same way) authorizes a join by
-- probing this table inside a transaction it rolls back, as the joining role with its
-- claims and realtime.topic set: a probe row it can select = may receive; a probe row
-- it may insert = may send. So the same policies work on Supabase and on plain Postgres.
-- Every call is wrapped in (select ...): evaluated once per statement, not per row.

-- Receive: registered viewers and staff on chat and qa, staff alone on admin, each user
-- alone on their own user topic (eventlive.may_receive: two primary-key lookups). Only
-- rows of the topic being authorized: setting realtime.topic to one's own topic does
-- not open other topics' stored messages.
drop policy if exists "Viewers and staff receive the webinar topics they are entitled to" on realtime.messages;
create policy "Viewers and staff receive the webinar topics they are entitled to"
on realtime.messages
for select
to authenticated
using (
    (select auth.uid()) is not null
    and topic = (select realtime.topic())
    and (select eventlive.may_receive((select realtime.topic())))
);

-- Send: nobody broadcasts to a webinar topic from a client; chat and questions go
-- through api.chat_send / api.question_ask, which check registration, bans and limits.
-- Restrictive, so a permissive insert policy added later for other topics cannot open
-- these. (Without any permissive insert policy every client insert is refused anyway.)
drop policy if exists "No client broadcasts to a webinar topic" on realtime.messages;
create policy "No client broadcasts to a webinar topic"
on realtime.messages
as restrictive
for insert
to anon, authenticated
with check (topic not like 'webinar:%' and coalesce((select realtime.topic()), '') not like 'webinar:%');
