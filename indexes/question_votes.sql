-- The auth.users cascade (the primary key serves the one-vote-per-viewer upsert).

-- Give up after a minute of waiting for a lock (e.g. behind a long transaction) rather
-- than hang the migration; an abandoned build leaves an invalid index, which migrate rebuilds.
set lock_timeout = '1min';

create index concurrently if not exists question_votes_user_id_idx
on eventlive.question_votes (user_id);
