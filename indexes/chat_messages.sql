-- The polling cursor (chat_since: seq > after_seq, one range scan), a sender's recent
-- messages (rate limit and slow mode: the last 5, newest first) and the auth.users cascade.

-- Give up after a minute of waiting for a lock (e.g. behind a long transaction) rather
-- than hang the migration; an abandoned build leaves an invalid index, which migrate rebuilds.
set lock_timeout = '1min';

create unique index concurrently if not exists chat_messages_webinar_id_seq_idx
on eventlive.chat_messages (webinar_id, seq);

create index concurrently if not exists chat_messages_webinar_id_user_id_created_at_idx
on eventlive.chat_messages (webinar_id, user_id, created_at);

create index concurrently if not exists chat_messages_user_id_idx
on eventlive.chat_messages (user_id);
