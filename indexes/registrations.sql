-- A viewer's own registrations (RLS own-rows reads) and the auth.users cascade.

create index concurrently if not exists registrations_user_id_idx
on eventlive.registrations (user_id);
