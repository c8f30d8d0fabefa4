-- staff_webinar_ids(): the webinars of one staff member, read by every staff check.

create index concurrently if not exists webinar_staff_user_id_idx
on eventlive.webinar_staff (user_id);
