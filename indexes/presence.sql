-- Hot-path lookups use the primary key (webinar_id, user_id). A viewer's own rows
-- (RLS reads) and the auth.users cascade use this one. Deliberately no index on
-- last_seen_at: every heartbeat updates it, and an index on it would turn each
-- HOT update into an index insert (see bench/ for the measured HOT ratio).
create index concurrently if not exists presence_user_id_idx
on eventlive.presence (user_id);
