-- Direct reads by signed-in users (supabase-js .from('webinars')). Writes go through
-- api.upsert_webinar only; service_role bypasses RLS.
drop policy if exists "Users see published webinars and staff see their drafts" on eventlive.webinars;
create policy "Users see published webinars and staff see their drafts"
on eventlive.webinars
for select
to authenticated
using (state <> 'draft' or id in (select eventlive.staff_webinar_ids()));
