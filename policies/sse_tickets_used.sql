-- Only the realtime hub sees which SSE tickets were used; writes only through
-- eventlive.use_sse_ticket (its first use wins).
drop policy if exists "The realtime hub sees used SSE tickets" on eventlive.sse_tickets_used;
create policy "The realtime hub sees used SSE tickets"
on eventlive.sse_tickets_used
for select
to eventlive_hub
using (true);
