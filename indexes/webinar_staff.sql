-- staff_webinar_ids(): the webinars of one staff member, read by every staff check.

-- Give up after a minute of waiting for a lock (e.g. behind a long transaction) rather
-- than hang the migration; an abandoned build leaves an invalid index, which migrate rebuilds.
set lock_timeout = '1min';

create index concurrently if not exists webinar_staff_user_id_idx
on eventlive.webinar_staff (user_id);
