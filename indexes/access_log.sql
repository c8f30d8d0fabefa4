-- Append-only: each index is paid on every track_access. A viewer's own records (RLS
-- reads) and a webinar's history by time are the two reads worth one each.

create index concurrently if not exists access_log_user_id_at_idx
on eventlive.access_log (user_id, at);

create index concurrently if not exists access_log_webinar_id_at_idx
on eventlive.access_log (webinar_id, at);
