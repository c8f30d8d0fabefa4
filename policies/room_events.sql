-- Only the realtime hub reads the room log (it delivers to each subscriber what the
-- realtime.messages policies allowed at join); viewers poll through api.chat_since and
-- api.questions. Writes only through eventlive.publish; service_role bypasses RLS.
drop policy if exists "The realtime hub reads every webinar's events" on eventlive.room_events;
create policy "The realtime hub reads every webinar's events"
on eventlive.room_events
for select
to eventlive_hub
using (true);
