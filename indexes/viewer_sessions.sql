-- A viewer's sessions per webinar (RLS own-rows reads, history) and the cascades.
-- Hot-path lookups use the primary key (session_id).

create index concurrently if not exists viewer_sessions_user_id_webinar_id_idx
on eventlive.viewer_sessions (user_id, webinar_id);

create index concurrently if not exists viewer_sessions_webinar_id_idx
on eventlive.viewer_sessions (webinar_id);
