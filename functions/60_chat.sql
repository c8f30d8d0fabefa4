-- Live chat: send, read by cursor, moderate, ban, room settings. Security
-- definer: viewers may not write the tables directly; these functions are the only way
-- in, with their rules. Every change is published to the room log (functions/05_room.sql)
-- as the last write of its transaction, so the seq lock is held only to commit.

-- The helpers below get no grant: the api functions call them as their owner.

-- Staff of the webinar (true), a registered viewer (false), or 403 not_registered
-- (401 user_not_found when the user no longer exists: their rows went with them).
create or replace function eventlive.room_role_is_staff(p_webinar_id bigint, p_uid uuid) returns boolean
language plpgsql stable set search_path = '' as $$
begin
    if exists (
        select from eventlive.webinar_staff as s where s.webinar_id = p_webinar_id and s.user_id = p_uid
    ) then
        return true;
    end if;
    if exists (
        select from eventlive.registrations as r where r.webinar_id = p_webinar_id and r.user_id = p_uid
    ) then
        return false;
    end if;
    perform eventlive.require_user(p_uid, false);
    raise exception using errcode = 'PT403', message = 'Register for this webinar to take part in its chat and Q&A.',
        detail = 'not_registered';
end
$$;
comment on function eventlive.room_role_is_staff(bigint, uuid) is
'True for staff of the webinar, false for a registered viewer; raises 403 not_registered otherwise (401 user_not_found for a deleted user).';

-- The room gate of every chat and Q&A write, for a webinar the caller found (401 and 404
-- come first, from the caller): 403 webinar_closed, then 403 not_registered (401
-- user_not_found for a deleted user). Returns whether the caller is staff. The writer
-- then checks that its feature is on (chat_disabled, qa_disabled) and, for a viewer,
-- the ban (eventlive.require_not_banned), in that order.
create or replace function eventlive.require_room_member(p_webinar eventlive.webinars, p_uid uuid, p_at timestamptz)
returns boolean
language plpgsql stable set search_path = '' as $$
begin
    perform eventlive.require_entry_open(p_webinar, p_at);
    return eventlive.room_role_is_staff(p_webinar.id, p_uid);
end
$$;
comment on function eventlive.require_room_member(eventlive.webinars, uuid, timestamptz) is
'Raises 403 webinar_closed, then not_registered (401 user_not_found); returns true for staff.';

-- 403 banned while a ban of this viewer in this webinar holds (until null: for good).
create or replace function eventlive.require_not_banned(p_webinar_id bigint, p_uid uuid, p_at timestamptz)
returns void
language plpgsql stable set search_path = '' as $$
declare
    v_until timestamptz;
begin
    select b.until into v_until from eventlive.chat_bans as b
    where b.webinar_id = p_webinar_id and b.user_id = p_uid and (b.until is null or b.until > p_at);
    if found then
        raise exception using errcode = 'PT403', message = 'You are banned from this webinar''s chat and Q&A.',
            detail = 'banned',
            hint = case when v_until is null then 'Until the webinar ends.' else 'Until ' || v_until::text || '.' end;
    end if;
end
$$;
comment on function eventlive.require_not_banned(bigint, uuid, timestamptz) is
'Raises 403 banned while a ban of the user in the webinar holds.';

-- 400 empty_message (null, blank or whitespace only, Unicode spaces included) or
-- message_too_long (more characters than the limit).
create or replace function eventlive.check_message_body(p_body text, p_max_chars integer) returns void
language plpgsql immutable set search_path = '' as $$
begin
    if p_body is null
        or p_body ~ '^[[:space:]\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]*$' then
        raise exception using errcode = '22023', message = 'The message is empty.', detail = 'empty_message';
    end if;
    if pg_catalog.char_length(p_body) > p_max_chars then
        raise exception using errcode = '22023',
            message = 'The message is longer than ' || p_max_chars || ' characters.',
            detail = 'message_too_long';
    end if;
end
$$;
comment on function eventlive.check_message_body(text, integer) is
'Raises 400 empty_message or message_too_long.';

-- Seconds until the sender may send again (0: now). recent: the sender's latest send
-- times, newest first (at least max_count of them when there are that many). Two
-- limits: max_count sends per window, and one send per slow_mode_seconds.
create or replace function eventlive.retry_after(
    recent timestamptz[], max_count integer, per interval, slow_mode_seconds integer, at timestamptz
) returns integer
language sql immutable set search_path = '' as $$
    select greatest(
        case
            when pg_catalog.cardinality(recent) >= max_count and recent[max_count] > at - per
                then pg_catalog.ceil(extract(epoch from recent[max_count] + per - at))::integer
            else 0
        end,
        case
            when slow_mode_seconds > 0 and recent[1] > at - pg_catalog.make_interval(secs => slow_mode_seconds)
                then pg_catalog.ceil(
                    extract(epoch from recent[1] + pg_catalog.make_interval(secs => slow_mode_seconds) - at)
                )::integer
            else 0
        end
    )
$$;
comment on function eventlive.retry_after(timestamptz[], integer, interval, integer, timestamptz) is
'Whole seconds until another send is allowed under max_count per window and slow mode (0 = now).';

-- The rate limit of chat and Q&A: 429 rate_limited with Retry-After unless a send is
-- allowed now (eventlive.retry_after; p_recent, the sender's latest send times, newest
-- first). Raised through PostgREST's RAISE SQLSTATE 'PGRST': the message is the response
-- body, the detail its status and headers (the shim honours both, as PostgREST does).
-- p_what names the sends in the message ('Too many <p_what>: ...').
create or replace function eventlive.check_rate_limit(
    p_recent timestamptz[], p_max_count integer, p_per interval, p_slow_mode_seconds integer, p_at timestamptz,
    p_what text
) returns void
language plpgsql immutable set search_path = '' as $$
declare
    v_retry integer := eventlive.retry_after(p_recent, p_max_count, p_per, p_slow_mode_seconds, p_at);
begin
    if v_retry > 0 then
        raise sqlstate 'PGRST' using
            message = pg_catalog.json_build_object(
                'code', 'PT429',
                'message', 'Too many ' || p_what || ': try again in ' || v_retry || ' s.',
                'details', 'rate_limited',
                'hint', 'Retry after ' || v_retry || ' s.'
            )::text,
            detail = pg_catalog.json_build_object(
                'status', 429, 'headers', pg_catalog.json_build_object('Retry-After', v_retry::text)
            )::text;
    end if;
end
$$;
comment on function eventlive.check_rate_limit(timestamptz[], integer, interval, integer, timestamptz, text) is
'Raises HTTP 429 rate_limited with a Retry-After header (PostgREST''s SQLSTATE PGRST) unless the limits allow a send now.';

-- One sender's sends in one webinar run one at a time (chat_send, question_ask): a
-- retry racing its original finds it stored, and the limits count every send. A
-- transaction-scoped advisory lock on (channel, webinar, sender), in the one-bigint key
-- space (eventlive.lock_viewer uses the two-int4 one).
create or replace function eventlive.lock_sender(p_channel text, p_webinar_id bigint, p_uid uuid)
returns void
language plpgsql volatile set search_path = '' as $$
begin
    perform pg_catalog.pg_advisory_xact_lock(
        pg_catalog.hashtextextended(p_channel || ':' || p_webinar_id || ':' || p_uid, 0)
    );
end
$$;
comment on function eventlive.lock_sender(text, bigint, uuid) is
'Waits for, then holds until the end of the transaction, the lock on one sender''s sends on one channel of a webinar.';

-- How soon a polling client may ask again: 2 s in a room of up to 249 present viewers,
-- one more second per further 250 (1,000 viewers: 6 s; 5,000: 22 s), at most 30 s. The
-- viewer count is the latest per-minute presence sample (one index row), so the answer
-- grows with the crowd that polls, and polling load grows far slower than the crowd.
create or replace function eventlive.poll_after_seconds(p_webinar_id bigint) returns integer
language sql stable set search_path = '' as $$
    select least(30, 2 + coalesce((
        select m.viewers from eventlive.presence_minutes as m
        where m.webinar_id = p_webinar_id
        order by m.minute desc
        limit 1
    ), 0) / 250)
$$;
comment on function eventlive.poll_after_seconds(bigint) is
'Seconds a polling client should wait: 2, +1 per 250 present viewers beyond the first 249, at most 30.';

-- A message as chat_since returns it and the room pushes it. Viewers see a hidden or
-- deleted message as a tombstone {id, seq, hidden}; staff see everything, with status.
create or replace function eventlive.chat_item(
    p_message eventlive.chat_messages, p_display_name text, p_for_staff boolean
) returns jsonb
language plpgsql immutable set search_path = '' as $$
begin
    if not p_for_staff and p_message.status in ('hidden', 'deleted') then
        return pg_catalog.jsonb_build_object('id', p_message.id, 'seq', p_message.seq, 'hidden', true);
    end if;
    return pg_catalog.jsonb_build_object(
        'id', p_message.id,
        'seq', p_message.seq,
        'user_id', p_message.user_id,
        'display_name', p_display_name,
        'body', p_message.body,
        'created_at', p_message.created_at
    ) || case
        when p_for_staff then pg_catalog.jsonb_build_object('status', p_message.status, 'held', p_message.status = 'held')
        else '{}'::jsonb
    end;
end
$$;
comment on function eventlive.chat_item(eventlive.chat_messages, text, boolean) is
'A chat message as chat_since shows it (viewers: tombstone for hidden/deleted; staff: with status and held).';

-- Publish the state of a message and return the event's seq (the caller stores it on
-- the row): 'message' on chat when visible, 'message_hidden' on chat when hidden or
-- deleted, 'message_held' on admin (staff only) when held.
create or replace function eventlive.publish_message(p_message eventlive.chat_messages) returns bigint
language plpgsql volatile set search_path = '' as $$
declare
    v_name text;
begin
    select p.display_name into v_name from eventlive.profiles as p where p.user_id = p_message.user_id;
    if p_message.status = 'held' then
        return eventlive.publish(
            p_message.webinar_id, 'admin', 'message_held', eventlive.chat_item(p_message, v_name, true) - 'seq'
        );
    end if;
    return eventlive.publish(
        p_message.webinar_id, 'chat',
        case when p_message.status = 'visible' then 'message' else 'message_hidden' end,
        eventlive.chat_item(p_message, v_name, false) - 'seq'
    );
end
$$;
comment on function eventlive.publish_message(eventlive.chat_messages) is
'Publishes a chat message''s state (message | message_hidden on chat, message_held on admin); returns the event seq.';

-- The answer of chat_send and question_ask, for a new message or question and for a
-- replay of a stored one.
create or replace function eventlive.send_receipt(p_id bigint, p_seq bigint, p_created_at timestamptz, p_status text)
returns jsonb
language sql immutable set search_path = '' as $$
    select pg_catalog.jsonb_build_object('id', p_id, 'seq', p_seq, 'created_at', p_created_at, 'status', p_status)
$$;
comment on function eventlive.send_receipt(bigint, bigint, timestamptz, text) is
'What chat_send and question_ask answer: id, seq, created_at, status.';

-- Send a chat message. Checks in this order: 401, 404 webinar_not_found,
-- 403 webinar_closed, 403 not_registered, 403 chat_disabled / banned, then a replay of
-- a stored client_msg_id returns the stored message, then 400 empty_message /
-- message_too_long, then 429 rate_limited (5 per 30 s and the slow mode; staff exempt).
-- One sender's sends run one at a time (eventlive.lock_sender), so a retry racing its
-- original finds it stored and the limits count every send: no 23505.
create or replace function api.chat_send(
    webinar_id bigint,
    body text,
    client_msg_id uuid default null
) returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_uid uuid := eventlive.require_sign_in('chat');
    v_now timestamptz := eventlive.now();
    v_webinar eventlive.webinars := eventlive.require_webinar(chat_send.webinar_id);
    v_staff boolean := eventlive.require_room_member(v_webinar, v_uid, v_now);
    v_settings eventlive.room_settings;
    v_message eventlive.chat_messages;
begin
    select s.* into v_settings from eventlive.room_settings as s where s.webinar_id = v_webinar.id;
    if not v_settings.chat_enabled then
        raise exception using errcode = 'PT403', message = 'Chat is turned off in this webinar.',
            detail = 'chat_disabled';
    end if;
    if not v_staff then
        perform eventlive.require_not_banned(v_webinar.id, v_uid, v_now);
    end if;

    perform eventlive.lock_sender('chat', v_webinar.id, v_uid);
    if chat_send.client_msg_id is not null then
        select m.* into v_message from eventlive.chat_messages as m
        where m.webinar_id = v_webinar.id and m.user_id = v_uid and m.client_msg_id = chat_send.client_msg_id;
        if found then
            return eventlive.send_receipt(v_message.id, v_message.seq, v_message.created_at, v_message.status);
        end if;
    end if;

    perform eventlive.check_message_body(chat_send.body, v_settings.max_message_chars);
    if not v_staff then
        perform eventlive.check_rate_limit(
            array(
                select m.created_at from eventlive.chat_messages as m
                where m.webinar_id = v_webinar.id and m.user_id = v_uid
                order by m.created_at desc
                limit 5
            ),
            5, interval '30 seconds', v_settings.slow_mode_seconds, v_now, 'messages'
        );
    end if;

    -- The sender's auth.users row, locked before the room seq lock: a user deleted
    -- meanwhile is 401 user_not_found, never a 23503 on the insert below.
    perform eventlive.require_user(v_uid, true);
    -- The row is built first and published, then stored with its seq: publish is the
    -- only step that waits on other senders, and it comes last.
    v_message.id := pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('eventlive.chat_messages', 'id'));
    v_message.webinar_id := v_webinar.id;
    v_message.user_id := v_uid;
    v_message.client_msg_id := chat_send.client_msg_id;
    v_message.body := chat_send.body;
    v_message.status := case when v_settings.hold_for_review and not v_staff then 'held' else 'visible' end;
    v_message.created_at := v_now;
    v_message.seq := eventlive.publish_message(v_message);
    insert into eventlive.chat_messages (id, webinar_id, user_id, client_msg_id, body, status, seq, created_at)
    values (
        v_message.id, v_message.webinar_id, v_message.user_id, v_message.client_msg_id, v_message.body,
        v_message.status, v_message.seq, v_message.created_at
    );
    return eventlive.send_receipt(v_message.id, v_message.seq, v_message.created_at, v_message.status);
end
$$;
comment on function api.chat_send(bigint, text, uuid) is
'Send a chat message (registered viewers and staff). Idempotent by client_msg_id. Returns id, seq, created_at, status (visible|held). Errors in this order: 401 not_authenticated, 404 webinar_not_found, 403 webinar_closed, 403 not_registered (401 user_not_found when the token''s user no longer exists), 403 chat_disabled, 403 banned, (replay returns the stored message), 400 empty_message, 400 message_too_long, 429 rate_limited with Retry-After (5 per 30 s and slow mode; staff exempt).
@returns {id: bigint, seq: bigint, created_at: timestamptz, status: visible|held|hidden|deleted}';
grant execute on function api.chat_send(bigint, text, uuid) to authenticated;

-- The prologue of a room read (chat_since, questions): 401 not_authenticated unless
-- signed in or service_role ('Sign in to read <p_what>.'), 404 webinar_not_found, 403
-- not_registered (401 user_not_found for a deleted user) unless registered, staff or
-- service_role, then the page (400 invalid_after_seq, invalid_max_rows). Returns whether
-- the caller reads as staff (service_role does).
create or replace function eventlive.require_room_reader(
    p_webinar_id bigint, p_after_seq bigint, p_max_rows integer, p_what text
) returns boolean
language plpgsql stable set search_path = '' as $$
declare
    v_uid uuid := eventlive.require_sign_in('read ' || p_what, true);
    v_staff boolean;
begin
    perform eventlive.require_webinar(p_webinar_id);
    v_staff := eventlive.is_service_role() or eventlive.room_role_is_staff(p_webinar_id, v_uid);
    perform eventlive.check_page(p_after_seq, p_max_rows);
    return v_staff;
end
$$;
comment on function eventlive.require_room_reader(bigint, bigint, integer, text) is
'Raises 401 not_authenticated, 404 webinar_not_found, 403 not_registered (401 user_not_found), 400 invalid_after_seq / invalid_max_rows, in that order; returns true for staff and service_role.';

-- The cursor of a room read's answer: next_seq (after the page's last seq; when the page
-- is not full, the room's last committed seq, so events of other channels are skipped:
-- seq order is commit order, nothing at or below it can still appear) and
-- poll_after_seconds. p_count and p_last: the page's rows and its highest seq.
create or replace function eventlive.room_cursor(
    p_webinar_id bigint, p_after_seq bigint, p_max_rows integer, p_count bigint, p_last bigint
) returns jsonb
language plpgsql stable set search_path = '' as $$
declare
    v_head bigint;
begin
    if p_count < p_max_rows then
        select s.last_seq into v_head from eventlive.room_sequences as s where s.webinar_id = p_webinar_id;
    end if;
    return pg_catalog.jsonb_build_object(
        'next_seq', greatest(p_after_seq, p_last, v_head),
        'poll_after_seconds', eventlive.poll_after_seconds(p_webinar_id)
    );
end
$$;
comment on function eventlive.room_cursor(bigint, bigint, integer, bigint, bigint) is
'next_seq and poll_after_seconds of a room read''s answer (chat_since, questions), from its page''s row count and last seq.';

-- Read the chat after a cursor. Viewers: visible messages, hidden and deleted ones as
-- tombstones, held ones not at all; staff (and service_role): everything, flagged.
-- next_seq: the cursor for the next call (eventlive.room_cursor). Stable: the shim may
-- serve it by GET and share one answer among identical requests.
create or replace function api.chat_since(
    webinar_id bigint,
    after_seq bigint default 0,
    max_rows integer default 100
) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_staff boolean := eventlive.require_room_reader(
        chat_since.webinar_id, chat_since.after_seq, chat_since.max_rows, 'the chat'
    );
    v_settings eventlive.room_settings;
    v_items jsonb;
    v_count bigint;
    v_last bigint;
begin
    select s.* into v_settings from eventlive.room_settings as s where s.webinar_id = chat_since.webinar_id;
    select
        coalesce(
            pg_catalog.jsonb_agg(
                eventlive.chat_item(
                    page,
                    -- a scalar subquery: one primary-key lookup per row of the page,
                    -- never a join that reads the whole profiles table
                    (select p.display_name from eventlive.profiles as p where p.user_id = page.user_id),
                    v_staff
                )
                order by page.seq
            ),
            '[]'
        ),
        pg_catalog.count(*),
        pg_catalog.max(page.seq)
    into v_items, v_count, v_last
    from (
        select m.* from eventlive.chat_messages as m
        where m.webinar_id = chat_since.webinar_id and m.seq > chat_since.after_seq
            and (v_staff or m.status <> 'held')
        order by m.seq
        limit chat_since.max_rows
    ) as page;
    return eventlive.room_cursor(chat_since.webinar_id, chat_since.after_seq, chat_since.max_rows, v_count, v_last)
        || pg_catalog.jsonb_build_object(
            'messages', v_items,
            'settings', pg_catalog.jsonb_build_object(
                'chat_enabled', v_settings.chat_enabled,
                'qa_enabled', v_settings.qa_enabled,
                'slow_mode_seconds', v_settings.slow_mode_seconds,
                'max_message_chars', v_settings.max_message_chars
            )
        );
end
$$;
comment on function api.chat_since(bigint, bigint, integer) is
'Chat messages with seq > after_seq (registered viewers and staff; staff also see held ones, flagged). Returns {messages: [{id, seq, user_id, display_name, body, created_at}], next_seq, poll_after_seconds, settings}; hidden messages come as {id, seq, hidden: true}. poll_after_seconds grows with the present viewers (2 s, +1 s per 250, at most 30). Errors: 401 not_authenticated, 404 webinar_not_found, 403 not_registered, 401 user_not_found, 400 invalid_after_seq, 400 invalid_max_rows.
@cache 2 room
@readers eventlive.room_readers(webinar_id)
@returns {messages: [{id: bigint, seq: bigint, hidden?: boolean, user_id?: uuid, display_name?: text|null, body?: text, created_at?: timestamptz, status?: visible|held|hidden|deleted, held?: boolean}], next_seq: bigint, poll_after_seconds: integer, settings: {chat_enabled: boolean, qa_enabled: boolean, slow_mode_seconds: integer, max_message_chars: integer}}';
grant execute on function api.chat_since(bigint, bigint, integer) to authenticated, service_role;

-- Staff moderation of one message: hide | show | approve (a held message) | delete
-- (final). Applying an action to a message already in that state changes nothing.
create or replace function api.chat_moderate(message_id bigint, action text) returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_uid uuid := eventlive.require_sign_in('moderate', true);
    v_message eventlive.chat_messages;
    v_status text;
begin
    if chat_moderate.action is null or chat_moderate.action not in ('hide', 'show', 'approve', 'delete') then
        raise exception using errcode = '22023', message = 'action must be hide, show, approve or delete.',
            detail = 'invalid_action';
    end if;
    select m.* into v_message from eventlive.chat_messages as m where m.id = chat_moderate.message_id for update;
    if not found then
        raise exception using errcode = 'PT404', message = 'This message does not exist.',
            detail = 'message_not_found';
    end if;
    perform eventlive.require_staff_of(v_message.webinar_id);  -- the message's webinar exists
    v_status := case chat_moderate.action when 'hide' then 'hidden' when 'delete' then 'deleted' else 'visible' end;
    if v_message.status = 'deleted' and v_status <> 'deleted' then
        raise exception using errcode = 'PT409', message = 'This message was deleted.', detail = 'message_deleted';
    end if;
    if v_message.status <> v_status then
        v_message.status := v_status;
        v_message.seq := eventlive.publish_message(v_message);
        update eventlive.chat_messages as m
        set status = v_message.status, seq = v_message.seq, moderated_by = v_uid, moderated_at = eventlive.now()
        where m.id = v_message.id;
    end if;
    return pg_catalog.jsonb_build_object('id', v_message.id, 'seq', v_message.seq, 'status', v_message.status);
end
$$;
comment on function api.chat_moderate(bigint, text) is
'Staff: hide, show, approve (held) or delete (final) a chat message; idempotent. Returns id, seq, status. Errors: 401 not_authenticated, 400 invalid_action, 404 message_not_found, 403 not_staff, 401 user_not_found, 409 message_deleted.
@returns {id: bigint, seq: bigint, status: visible|held|hidden|deleted}';
grant execute on function api.chat_moderate(bigint, text) to authenticated, service_role;

-- Staff ban a viewer from the webinar's chat and Q&A for some minutes, or (minutes
-- null) until the webinar ends. Banning again replaces the earlier ban.
create or replace function api.chat_ban(webinar_id bigint, user_id uuid, minutes integer default null)
returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_webinar eventlive.webinars := eventlive.require_staff(chat_ban.webinar_id);
    v_until timestamptz;
begin
    if chat_ban.minutes is not null and chat_ban.minutes not between 1 and 525600 then
        raise exception using errcode = '22023', message = 'minutes must be between 1 and 525600, or null.',
            detail = 'invalid_minutes';
    end if;
    perform eventlive.require_named_user(chat_ban.user_id);  -- locked: no 23503 on the insert
    if exists (
        select from eventlive.webinar_staff as s where s.webinar_id = v_webinar.id and s.user_id = chat_ban.user_id
    ) then
        raise exception using errcode = '22023', message = 'Staff cannot be banned.', detail = 'cannot_ban_staff';
    end if;
    v_until := eventlive.now() + pg_catalog.make_interval(mins => chat_ban.minutes);
    insert into eventlive.chat_bans as b (webinar_id, user_id, until, banned_by, created_at)
    values (v_webinar.id, chat_ban.user_id, v_until, auth.uid(), eventlive.now())
    on conflict (webinar_id, user_id) do update
    set until = excluded.until, banned_by = excluded.banned_by, created_at = excluded.created_at;
    return pg_catalog.jsonb_build_object('webinar_id', v_webinar.id, 'user_id', chat_ban.user_id, 'until', v_until);
end
$$;
comment on function api.chat_ban(bigint, uuid, integer) is
'Staff: ban a viewer from chat and Q&A for minutes (1..525600) or, null, until the webinar ends. Returns webinar_id, user_id, until. Errors: 404 webinar_not_found, 401 not_authenticated, 403 not_staff, 401 user_not_found (the caller''s own user no longer exists), 400 invalid_minutes, 404 user_not_found (the user to ban), 400 cannot_ban_staff.
@returns {webinar_id: bigint, user_id: uuid, until: timestamptz|null}';
grant execute on function api.chat_ban(bigint, uuid, integer) to authenticated, service_role;

create or replace function api.chat_unban(webinar_id bigint, user_id uuid) returns void
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_webinar eventlive.webinars := eventlive.require_staff(chat_unban.webinar_id);
begin
    delete from eventlive.chat_bans as b where b.webinar_id = v_webinar.id and b.user_id = chat_unban.user_id;
end
$$;
comment on function api.chat_unban(bigint, uuid) is
'Staff: lift a viewer''s ban (idempotent, 204). Errors: 404 webinar_not_found, 401 not_authenticated, 403 not_staff, 401 user_not_found.';
grant execute on function api.chat_unban(bigint, uuid) to authenticated, service_role;

-- Hosts (not moderators) change the room settings; null leaves a setting unchanged, so
-- a call with only webinar_id reads them. A change is published as 'settings' on chat.
create or replace function api.room_settings(
    webinar_id bigint,
    chat_enabled boolean default null,
    qa_enabled boolean default null,
    slow_mode_seconds integer default null,
    hold_for_review boolean default null,
    max_message_chars integer default null
) returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
    v_webinar eventlive.webinars := eventlive.require_staff(room_settings.webinar_id);
    v_before eventlive.room_settings;
    v_after eventlive.room_settings;
    v_settings jsonb;
begin
    if not eventlive.is_service_role() and not exists (
        select from eventlive.webinar_staff as s
        where s.webinar_id = v_webinar.id and s.user_id = auth.uid() and s.role = 'host'
    ) then
        raise exception using errcode = 'PT403', message = 'Only the hosts of this webinar may change its settings.',
            detail = 'not_host';
    end if;
    if room_settings.slow_mode_seconds not between 0 and 3600 then
        raise exception using errcode = '22023', message = 'slow_mode_seconds must be between 0 and 3600.',
            detail = 'invalid_slow_mode_seconds';
    end if;
    if room_settings.max_message_chars not between 1 and 2000 then
        raise exception using errcode = '22023', message = 'max_message_chars must be between 1 and 2000.',
            detail = 'invalid_max_message_chars';
    end if;
    select s.* into v_before from eventlive.room_settings as s where s.webinar_id = v_webinar.id for update;
    v_after := v_before;
    v_after.chat_enabled := coalesce(room_settings.chat_enabled, v_before.chat_enabled);
    v_after.qa_enabled := coalesce(room_settings.qa_enabled, v_before.qa_enabled);
    v_after.slow_mode_seconds := coalesce(room_settings.slow_mode_seconds, v_before.slow_mode_seconds);
    v_after.hold_for_review := coalesce(room_settings.hold_for_review, v_before.hold_for_review);
    v_after.max_message_chars := coalesce(room_settings.max_message_chars, v_before.max_message_chars);
    v_settings := pg_catalog.to_jsonb(v_after) - 'webinar_id' - 'updated_at';
    if v_settings is distinct from (pg_catalog.to_jsonb(v_before) - 'webinar_id' - 'updated_at') then
        update eventlive.room_settings as s
        set chat_enabled = v_after.chat_enabled,
            qa_enabled = v_after.qa_enabled,
            slow_mode_seconds = v_after.slow_mode_seconds,
            hold_for_review = v_after.hold_for_review,
            max_message_chars = v_after.max_message_chars,
            updated_at = eventlive.now()
        where s.webinar_id = v_webinar.id;
        perform eventlive.publish(v_webinar.id, 'chat', 'settings', v_settings);
    end if;
    return v_settings;
end
$$;
comment on function api.room_settings(bigint, boolean, boolean, integer, boolean, integer) is
'Hosts: read or change the room settings (null = unchanged): chat_enabled, qa_enabled, slow_mode_seconds (0..3600), hold_for_review, max_message_chars (1..2000). Returns them all. Errors: 404 webinar_not_found, 401 not_authenticated, 403 not_staff, 401 user_not_found, 403 not_host, 400 invalid_slow_mode_seconds, 400 invalid_max_message_chars.
@returns {chat_enabled: boolean, qa_enabled: boolean, slow_mode_seconds: integer, hold_for_review: boolean, max_message_chars: integer}';
grant execute on function api.room_settings(bigint, boolean, boolean, integer, boolean, integer)
to authenticated, service_role;
