-- Functions that were renamed or removed. They are dropped here, in the last repeatable
-- file, because migrate re-applies functions/ in file order: by now every caller has been
-- replaced, so no live call can reach a dropped function in between (dropping them in a
-- versioned migration would break the hot path until the callers were re-applied).

-- Renamed to eventlive.record_presence_minute (20_presence_minutes.sql).
drop function if exists eventlive.sample_presence(bigint, timestamptz);

-- Replaced within issue #18 by eventlive.require_webinar(bigint, boolean) and
-- eventlive.require_entry_open (00_helpers.sql).
drop function if exists eventlive.require_webinar(bigint, timestamptz, boolean);

-- Replaced within issue #18: eventlive.check_rate_limit (the retry and the 429 in one
-- check) and eventlive.send_receipt (chat_send's and question_ask's answer), 60_chat.sql.
drop function if exists eventlive.raise_rate_limited(integer, text);
drop function if exists eventlive.chat_receipt(eventlive.chat_messages);
