-- Only the realtime hub reads the large broadcasts (by id, after their NOTIFY); writes
-- only through eventlive.broadcast.
drop policy if exists "The realtime hub reads large broadcasts" on eventlive.room_broadcasts;
create policy "The realtime hub reads large broadcasts"
on eventlive.room_broadcasts
for select
to eventlive_hub
using (true);
