-- Q&A: ask, vote, read by cursor, answer. Same gate, bans, idempotency and
-- 429 as chat (functions/60_chat.sql, whose helpers these use); every change is
-- published on the 'qa' channel as the last write of its transaction.

-- A question as `questions` returns it and the room pushes it. Viewers see a dismissed
-- question as a tombstone, and no author of an anonymous one; staff see everything.
create or replace function eventlive.question_item(
    p_question eventlive.questions, p_display_name text, p_for_staff boolean
) returns jsonb
language plpgsql immutable set search_path = '' as $$
declare
    v_named boolean := p_for_staff or not p_question.anonymous;
begin
    if not p_for_staff and p_question.status = 'dismissed' then
        return pg_catalog.jsonb_build_object('id', p_question.id, 'seq', p_question.seq, 'status', 'dismissed');
    end if;
    return pg_catalog.jsonb_build_object(
        'id', p_question.id,
        'seq', p_question.seq,
        'user_id', case when v_named then p_question.user_id end,
        'display_name', case when v_named then p_display_name end,
        'body', p_question.body,
        'anonymous', p_question.anonymous,
        'status', p_question.status,
        'answer', p_question.answer,
        'votes', p_question.votes,
        'created_at', p_question.created_at
    );
end
$$;
comment on function eventlive.question_item(eventlive.questions, text, boolean) is
'A question as `questions` shows it (viewers: tombstone when dismissed, no author when anonymous).';

-- Publish a question's state on 'qa' (event 'question' or 'question_updated') and
-- return the event's seq; the caller stores it on the row with published_at.
create or replace function eventlive.publish_question(p_question eventlive.questions, p_event text) returns bigint
language plpgsql volatile set search_path = '' as $$
declare
    v_name text;
begin
    select p.display_name into v_name from eventlive.profiles as p where p.user_id = p_question.user_id;
    return eventlive.publish(
        p_question.webinar_id, 'qa', p_event, eventlive.question_item(p_question, v_name, false) - 'seq'
    );
end
$$;
comment on function eventlive.publish_question(eventlive.questions, text) is
'Publishes a question''s state on the qa channel; returns the event seq.';

-- The room gate of the Q&A writes, for a webinar the caller found (401 and 404 come
-- first, from the caller): eventlive.require_room_member (403 webinar_closed, 403
-- not_registered, 401 user_not_found for a deleted user), 403 qa_disabled, 403 banned
-- (staff are never banned). Returns whether the caller is staff.
create or replace function eventlive.require_qa_open(p_webinar eventlive.webinars, p_uid uuid, p_at timestamptz)
returns boolean
language plpgsql stable set search_path = '' as $$
declare
    v_staff boolean := eventlive.require_room_member(p_webinar, p_uid, p_at);
begin
    if not (select s.qa_enabled from eventlive.room_settings as s where s.webinar_id = p_webinar.id) then
        raise exception using errcode = 'PT403', message = 'Q&A is turned off in this webinar.', detail = 'qa_disabled';
    end if;
    if not v_staff then
        perform eventlive.require_not_banned(p_webinar.id, p_uid, p_at);
    end if;
    return v_staff;
end
$$;
comment on function eventlive.require_qa_open(eventlive.webinars, uuid, timestamptz) is
'Raises 403 webinar_closed, not_registered (401 user_not_found), qa_disabled or banned; returns true for staff.';

-- The question a call names, or 404 question_not_found. p_for_update (staff writing the
-- question itself, question_answer): the row is locked to commit; a vote reads it
-- unlocked (its count is updated, and so locked, only when it changes).
create or replace function eventlive.require_question(p_question_id bigint, p_for_update boolean)
returns eventlive.questions
language plpgsql volatile set search_path = '' as $$
declare
    v_question eventlive.questions;
begin
    if p_for_update then
        select q.* into v_question from eventlive.questions as q where q.id = p_question_id for update;
    else
        select q.* into v_question from eventlive.questions as q where q.id = p_question_id;
    end if;
    if not found then
        raise exception using errcode = 'PT404', message = 'This question does not exist.',
            detail = 'question_not_found';
    end if;
    return v_question;
end
$$;
comment on function eventlive.require_question(bigint, boolean) is
'Returns the question; raises 404 question_not_found. p_for_update (staff writes): the row locked to commit.';

-- Ask a question. Checks in chat_send's order: 401, 404, 403 webinar_closed,
-- not_registered, qa_disabled / banned, replay of client_msg_id, 400 empty_message /
-- message_too_long (the room's max_message_chars), 429 rate_limited (3 per 60 s; staff
-- exempt). One asker's questions run one at a time: a racing retry finds the stored one.
create or replace function api.question_ask(
    webinar_id bigint,
    body text,
    client_msg_id uuid default null,
    anonymous boolean default false
) returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_uid uuid := eventlive.require_sign_in('ask a question');
    v_now timestamptz := eventlive.now();
    v_webinar eventlive.webinars := eventlive.require_webinar(question_ask.webinar_id);
    v_staff boolean := eventlive.require_qa_open(v_webinar, v_uid, v_now);
    v_question eventlive.questions;
begin
    perform eventlive.lock_sender('qa', v_webinar.id, v_uid);
    if question_ask.client_msg_id is not null then
        select q.* into v_question from eventlive.questions as q
        where q.webinar_id = v_webinar.id and q.user_id = v_uid and q.client_msg_id = question_ask.client_msg_id;
        if found then
            return eventlive.send_receipt(v_question.id, v_question.seq, v_question.created_at, v_question.status);
        end if;
    end if;

    perform eventlive.check_message_body(
        question_ask.body,
        (select s.max_message_chars from eventlive.room_settings as s where s.webinar_id = v_webinar.id)
    );
    if not v_staff then
        perform eventlive.check_rate_limit(
            array(
                select q.created_at from eventlive.questions as q
                where q.webinar_id = v_webinar.id and q.user_id = v_uid
                order by q.created_at desc
                limit 3
            ),
            3, interval '60 seconds', 0, v_now, 'questions'
        );
    end if;

    -- As in chat_send: the asker's row locked before the room seq lock and the insert.
    perform eventlive.require_user(v_uid, true);
    v_question.id := pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('eventlive.questions', 'id'));
    v_question.webinar_id := v_webinar.id;
    v_question.user_id := v_uid;
    v_question.client_msg_id := question_ask.client_msg_id;
    v_question.body := question_ask.body;
    v_question.anonymous := coalesce(question_ask.anonymous, false);
    v_question.status := 'open';
    v_question.votes := 0;
    v_question.created_at := v_now;
    v_question.seq := eventlive.publish_question(v_question, 'question');
    insert into eventlive.questions (
        id, webinar_id, user_id, client_msg_id, body, anonymous, status, votes, seq, published_at, created_at
    )
    values (
        v_question.id, v_question.webinar_id, v_question.user_id, v_question.client_msg_id, v_question.body,
        v_question.anonymous, v_question.status, 0, v_question.seq, v_now, v_now
    );
    return eventlive.send_receipt(v_question.id, v_question.seq, v_question.created_at, v_question.status);
end
$$;
comment on function api.question_ask(bigint, text, uuid, boolean) is
'Ask a question (registered viewers and staff). Idempotent by client_msg_id. Returns id, seq, created_at, status. Errors in this order: 401 not_authenticated, 404 webinar_not_found, 403 webinar_closed, 403 not_registered (401 user_not_found when the token''s user no longer exists), 403 qa_disabled, 403 banned, (replay returns the stored question), 400 empty_message, 400 message_too_long, 429 rate_limited with Retry-After (3 per 60 s; staff exempt).
@returns {id: bigint, seq: bigint, created_at: timestamptz, status: open|answered|dismissed|pinned}';
grant execute on function api.question_ask(bigint, text, uuid, boolean) to authenticated;

-- Vote for a question (up) or take the vote back; one vote per viewer, idempotent. The
-- count is kept on the question (its row lock orders concurrent voters). A change is
-- pushed as question_updated at most once per question per second; changes inside
-- that second are marked votes_dirty and sent by eventlive.flush_question_votes.
create or replace function api.question_vote(question_id bigint, up boolean default true) returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_uid uuid := eventlive.require_sign_in('vote');
    v_now timestamptz := eventlive.now();
    v_question eventlive.questions := eventlive.require_question(question_vote.question_id, false);
    v_webinar eventlive.webinars;
    v_delta integer := 0;
begin
    select w.* into v_webinar from eventlive.webinars as w where w.id = v_question.webinar_id;
    perform eventlive.require_qa_open(v_webinar, v_uid, v_now);
    if v_question.status = 'dismissed' then
        raise exception using errcode = 'PT409', message = 'This question was dismissed.', detail = 'question_closed';
    end if;

    if coalesce(question_vote.up, true) then
        -- the voter's row locked before the insert: no 23503 if deleted meanwhile
        perform eventlive.require_user(v_uid, true);
        insert into eventlive.question_votes (question_id, user_id, webinar_id, created_at)
        values (v_question.id, v_uid, v_question.webinar_id, v_now)
        on conflict do nothing;
        if found then
            v_delta := 1;
        end if;
    else
        delete from eventlive.question_votes as v where v.question_id = v_question.id and v.user_id = v_uid;
        if found then
            v_delta := -1;
        end if;
    end if;
    if v_delta <> 0 then
        update eventlive.questions as q set votes = q.votes + v_delta, votes_dirty = true
        where q.id = v_question.id
        returning * into v_question;
        if v_question.published_at <= v_now - interval '1 second' then
            v_question.seq := eventlive.publish_question(v_question, 'question_updated');
            update eventlive.questions as q set seq = v_question.seq, published_at = v_now, votes_dirty = false
            where q.id = v_question.id;
        end if;
    else
        select q.votes into v_question.votes from eventlive.questions as q where q.id = v_question.id;
    end if;
    return pg_catalog.jsonb_build_object(
        'question_id', v_question.id, 'votes', v_question.votes, 'up', coalesce(question_vote.up, true)
    );
end
$$;
comment on function api.question_vote(bigint, boolean) is
'Vote for a question (up = true) or withdraw the vote (false); one vote per viewer, idempotent. Returns question_id, votes, up. Errors: 401 not_authenticated, 404 question_not_found, 403 webinar_closed, 403 not_registered, 401 user_not_found, 403 qa_disabled, 403 banned, 409 question_closed (dismissed).
@returns {question_id: bigint, votes: integer, up: boolean}';
grant execute on function api.question_vote(bigint, boolean) to authenticated;

-- Send the vote counts held back by the once-per-second rule: every question of the
-- webinar whose count changed and whose last event is at least a second old. The hub
-- calls it on its tick for webinars with Q&A subscribers; skip locked, so it never
-- waits for a voter.
create or replace function eventlive.flush_question_votes(webinar_id bigint) returns integer
language plpgsql volatile security definer set search_path = '' as $$
declare
    v_now timestamptz := eventlive.now();
    v_question eventlive.questions;
    v_count integer := 0;
begin
    for v_question in
        select q.* from eventlive.questions as q
        where q.webinar_id = flush_question_votes.webinar_id and q.votes_dirty
            and q.published_at <= v_now - interval '1 second'
        order by q.id
        for update skip locked
    loop
        v_question.seq := eventlive.publish_question(v_question, 'question_updated');
        update eventlive.questions as q set seq = v_question.seq, published_at = v_now, votes_dirty = false
        where q.id = v_question.id;
        v_count := v_count + 1;
    end loop;
    return v_count;
end
$$;
comment on function eventlive.flush_question_votes(bigint) is
'Publishes question_updated for questions whose vote count changed and whose last event is a second old or more; returns how many.';
grant execute on function eventlive.flush_question_votes(bigint) to eventlive_hub;

-- Read the questions after a cursor (each with its votes count). Viewers: dismissed
-- ones as tombstones, anonymous ones without author; staff (and service_role): all.
-- next_seq and poll_after_seconds as in chat_since (eventlive.room_cursor). Stable:
-- GET-able and shareable.
create or replace function api.questions(
    webinar_id bigint,
    after_seq bigint default 0,
    max_rows integer default 100
) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_staff boolean := eventlive.require_room_reader(
        questions.webinar_id, questions.after_seq, questions.max_rows, 'the questions'
    );
    v_items jsonb;
    v_count bigint;
    v_last bigint;
begin
    select
        coalesce(
            pg_catalog.jsonb_agg(
                -- the author's name by primary key, one lookup per row of the page
                eventlive.question_item(
                    page, (select p.display_name from eventlive.profiles as p where p.user_id = page.user_id), v_staff
                )
                order by page.seq
            ),
            '[]'
        ),
        pg_catalog.count(*),
        pg_catalog.max(page.seq)
    into v_items, v_count, v_last
    from (
        select q.* from eventlive.questions as q
        where q.webinar_id = questions.webinar_id and q.seq > questions.after_seq
        order by q.seq
        limit questions.max_rows
    ) as page;
    return eventlive.room_cursor(questions.webinar_id, questions.after_seq, questions.max_rows, v_count, v_last)
        || pg_catalog.jsonb_build_object('questions', v_items);
end
$$;
comment on function api.questions(bigint, bigint, integer) is
'Questions with seq > after_seq, each with its votes count (registered viewers and staff). Returns {questions: [{id, seq, user_id, display_name, body, anonymous, status, answer, votes, created_at}], next_seq, poll_after_seconds}; viewers get dismissed ones as {id, seq, status} and no author of anonymous ones. Errors: 401 not_authenticated, 404 webinar_not_found, 403 not_registered, 401 user_not_found, 400 invalid_after_seq, 400 invalid_max_rows.
@cache 2 room
@readers eventlive.room_readers(webinar_id)
@returns {questions: [{id: bigint, seq: bigint, status: open|answered|dismissed|pinned, user_id?: uuid|null, display_name?: text|null, body?: text, anonymous?: boolean, answer?: text|null, votes?: integer, created_at?: timestamptz}], next_seq: bigint, poll_after_seconds: integer}';
grant execute on function api.questions(bigint, bigint, integer) to authenticated, service_role;

-- Staff set a question's status (open | answered | dismissed | pinned) and, optionally,
-- its answer (null keeps the current one). Published as question_updated when changed.
create or replace function api.question_answer(question_id bigint, status text, answer text default null)
returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_uid uuid := eventlive.require_sign_in('answer questions', true);
    v_now timestamptz := eventlive.now();
    v_question eventlive.questions;
    v_name text;
begin
    if question_answer.status is null or question_answer.status not in ('open', 'answered', 'dismissed', 'pinned') then
        raise exception using errcode = '22023', message = 'status must be open, answered, dismissed or pinned.',
            detail = 'invalid_status';
    end if;
    if pg_catalog.char_length(question_answer.answer) > 2000 then
        raise exception using errcode = '22023', message = 'The answer is longer than 2000 characters.',
            detail = 'answer_too_long';
    end if;
    v_question := eventlive.require_question(question_answer.question_id, true);
    perform eventlive.require_staff_of(v_question.webinar_id);  -- the question's webinar exists
    if v_question.status is distinct from question_answer.status
        or (question_answer.answer is not null and v_question.answer is distinct from question_answer.answer) then
        v_question.status := question_answer.status;
        v_question.answer := coalesce(question_answer.answer, v_question.answer);
        v_question.seq := eventlive.publish_question(v_question, 'question_updated');
        update eventlive.questions as q
        set status = v_question.status, answer = v_question.answer, answered_by = v_uid, answered_at = v_now,
            seq = v_question.seq, published_at = v_now, votes_dirty = false
        where q.id = v_question.id;
    end if;
    select p.display_name into v_name from eventlive.profiles as p where p.user_id = v_question.user_id;
    return eventlive.question_item(v_question, v_name, true);
end
$$;
comment on function api.question_answer(bigint, text, text) is
'Staff: set a question''s status (open|answered|dismissed|pinned) and optionally its answer (null keeps it). Returns the question. Errors: 401 not_authenticated, 400 invalid_status, 400 answer_too_long, 404 question_not_found, 403 not_staff, 401 user_not_found.
@returns {id: bigint, seq: bigint, user_id: uuid|null, display_name: text|null, body: text, anonymous: boolean, status: open|answered|dismissed|pinned, answer: text|null, votes: integer, created_at: timestamptz}';
grant execute on function api.question_answer(bigint, text, text) to authenticated, service_role;
