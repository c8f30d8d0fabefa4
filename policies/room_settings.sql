-- Staff read their webinars' settings; viewers get the settings that concern them with
-- api.chat_since and the 'settings' event. Writes only through api.room_settings (hosts).
drop policy if exists "Staff see their webinars' room settings" on eventlive.room_settings;
create policy "Staff see their webinars' room settings"
on eventlive.room_settings
for select
to authenticated
using (webinar_id in (select eventlive.staff_webinar_ids()));
