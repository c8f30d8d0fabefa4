-- A viewer's own registrations (RLS own-rows reads) and the auth.users cascade.

-- Give up after a minute of waiting for a lock (e.g. behind a long transaction) rather
-- than hang the migration; an abandoned build leaves an invalid index, which migrate rebuilds.
set lock_timeout = '1min';

create index concurrently if not exists registrations_user_id_idx
on eventlive.registrations (user_id);
