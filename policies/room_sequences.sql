-- Only the realtime hub reads the counters (its periodic safety read); writes only
-- through eventlive.publish; service_role bypasses RLS.
drop policy if exists "The realtime hub reads every webinar's last seq" on eventlive.room_sequences;
create policy "The realtime hub reads every webinar's last seq"
on eventlive.room_sequences
for select
to eventlive_hub
using (true);
