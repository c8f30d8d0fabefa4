-- The polling cursor (questions: seq > after_seq), an asker's recent questions (rate
-- limit), the vote counts waiting to be published (few rows: partial), and the
-- auth.users cascade.

-- Give up after a minute of waiting for a lock (e.g. behind a long transaction) rather
-- than hang the migration; an abandoned build leaves an invalid index, which migrate rebuilds.
set lock_timeout = '1min';

create unique index concurrently if not exists questions_webinar_id_seq_idx
on eventlive.questions (webinar_id, seq);

create index concurrently if not exists questions_webinar_id_user_id_created_at_idx
on eventlive.questions (webinar_id, user_id, created_at);

create index concurrently if not exists questions_webinar_id_votes_dirty_idx
on eventlive.questions (webinar_id) where votes_dirty;

create index concurrently if not exists questions_user_id_idx
on eventlive.questions (user_id);
