-- Users read and write their own profile; staff read the profiles of their webinars'
-- registrants (api.profiles_batch / api.participants are the efficient way to do so).
drop policy if exists "Users see own profile and staff their registrants' profiles" on eventlive.profiles;
create policy "Users see own profile and staff their registrants' profiles"
on eventlive.profiles
for select
to authenticated
using (
    user_id = (select auth.uid())
    or exists (
        select from eventlive.registrations as r
        where
            r.user_id = profiles.user_id
            and r.webinar_id in (select eventlive.staff_webinar_ids())
    )
);

drop policy if exists "Users create their own profile" on eventlive.profiles;
create policy "Users create their own profile"
on eventlive.profiles
for insert
to authenticated
with check (user_id = (select auth.uid()));

drop policy if exists "Users update their own profile" on eventlive.profiles;
create policy "Users update their own profile"
on eventlive.profiles
for update
to authenticated
using (user_id = (select auth.uid()))
with check (user_id = (select auth.uid()));
