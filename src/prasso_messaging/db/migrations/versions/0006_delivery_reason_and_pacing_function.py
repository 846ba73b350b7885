"""deliveries: a reason column, fewer index writes per fan-out row; pacing slots in one call

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


TAKE_SLOTS_FUNCTION = """
CREATE OR REPLACE FUNCTION prasso_take_pacing_slots(
    p_key text, p_limit integer, p_spacing double precision, p_max_wait double precision,
    p_count integer, p_tolerance double precision, p_stagger double precision
) RETURNS double precision[] LANGUAGE plpgsql AS $$
-- The ring of prasso_messaging/pacing/base.py (take_from_ring) in one call: answers the
-- server clock, the granted slot times, then the first refused slot time negated. The ring
-- keeps each slot's end (its time plus the caller's tolerance); consecutive slots are at least
-- p_stagger apart (blocked_until carries the floor from one call to the next).
DECLARE
    k record;
    now_s double precision;
    last double precision;
    blocked double precision;
    previous double precision[];
    r record;
    slot double precision;
    i integer;
    granted integer := 0;
    answers double precision[];
BEGIN
    SELECT ring_size, issued, blocked_until INTO k
        FROM msg_pacing_keys WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO msg_pacing_keys (key, ring_size, issued, blocked_until)
            VALUES (p_key, p_limit, 0, 0) ON CONFLICT (key) DO NOTHING;
        SELECT ring_size, issued, blocked_until INTO k
            FROM msg_pacing_keys WHERE key = p_key FOR UPDATE;
    END IF;
    now_s := extract(epoch FROM clock_timestamp());
    blocked := k.blocked_until;
    IF k.ring_size <> p_limit THEN  -- the rate changed: a new ring after the last slot's window
        IF k.issued > 0 THEN
            SELECT slot_at INTO last FROM msg_pacing_slots
                WHERE key = p_key AND position = (k.issued - 1) % k.ring_size;
            blocked := greatest(blocked, coalesce(last + p_spacing, 0));
        END IF;
        DELETE FROM msg_pacing_slots WHERE key = p_key;
        UPDATE msg_pacing_keys SET ring_size = p_limit, issued = 0, blocked_until = blocked
            WHERE key = p_key;
        k.issued := 0;
    END IF;
    -- previous[i + 1]: the slot `p_limit` places before slot i of this call (NULL if none)
    previous := array_fill(NULL::double precision, ARRAY[p_count]);
    FOR r IN SELECT position, slot_at FROM msg_pacing_slots
             WHERE key = p_key AND k.issued >= p_limit - p_count + 1
               AND position = ANY(ARRAY(
                   SELECT (k.issued + g) % p_limit FROM generate_series(0, p_count - 1) g
                   WHERE k.issued + g >= p_limit))
    LOOP
        i := ((r.position - k.issued) % p_limit + p_limit) % p_limit;
        IF i < p_count THEN
            previous[i + 1] := r.slot_at;
        END IF;
    END LOOP;
    answers := ARRAY[now_s];
    FOR i IN 0 .. p_count - 1 LOOP
        slot := greatest(now_s, blocked);
        IF k.issued + i >= p_limit THEN
            IF i >= p_limit THEN
                slot := greatest(slot, answers[i - p_limit + 2] + p_tolerance + p_spacing);
            ELSIF previous[i + 1] IS NOT NULL THEN
                slot := greatest(slot, previous[i + 1] + p_spacing);
            END IF;
        END IF;
        IF slot - now_s > p_max_wait THEN
            answers := answers || (-slot);
            EXIT;
        END IF;
        answers := answers || slot;
        granted := granted + 1;
        blocked := slot + p_stagger;
    END LOOP;
    IF granted > 0 THEN
        INSERT INTO msg_pacing_slots (key, position, slot_at)
            SELECT DISTINCT ON ((k.issued + g) % p_limit)
                   p_key, (k.issued + g) % p_limit, answers[g + 2] + p_tolerance
            FROM generate_series(0, granted - 1) g
            ORDER BY (k.issued + g) % p_limit, g DESC
        ON CONFLICT (key, position) DO UPDATE SET slot_at = excluded.slot_at;
        UPDATE msg_pacing_keys SET issued = issued + granted, blocked_until = blocked
            WHERE key = p_key;
    END IF;
    RETURN answers;
END;
$$;
"""


CAP_KEYS = (
    ("fk_msg_cap_reservations_guest_id_guests", "guest_id", "guests"),
    ("fk_msg_cap_reservations_delivery_id_msg_deliveries", "delivery_id", "msg_deliveries"),
)


SENT_ONLY = (  # (index, columns, predicate): indexes only sent deliveries need
    (
        "ix_msg_deliveries_recipient_type_recipient_id_sent_at",
        ["recipient_type", "recipient_id", "sent_at"],
        "sent_at IS NOT NULL",
    ),
    (
        "ix_msg_deliveries_provider_message_id",
        ["provider_message_id"],
        "provider_message_id IS NOT NULL",
    ),
)
MESSAGE_KEY = "fk_msg_deliveries_msg_message_id_msg_messages"


def upgrade() -> None:
    with op.batch_alter_table("msg_deliveries") as batch:
        batch.add_column(sa.Column("reason", sa.String(40), nullable=True))
        batch.drop_constraint(MESSAGE_KEY, type_="foreignkey")
    for name, columns, predicate in SENT_ONLY:
        op.drop_index(name, table_name="msg_deliveries")
        op.create_index(
            name,
            "msg_deliveries",
            columns,
            postgresql_where=sa.text(predicate),
            sqlite_where=sa.text(predicate),
        )
    with op.batch_alter_table("msg_cap_reservations") as batch:  # a log: no per-row FK checks
        for name, _, _ in CAP_KEYS:
            batch.drop_constraint(name, type_="foreignkey")
    postgres = op.get_bind().dialect.name == "postgresql"
    code = (
        "split_part(error, ':', 1)"
        if postgres
        else "CASE WHEN instr(error, ':') > 0 THEN substr(error, 1, instr(error, ':') - 1)"
        " ELSE error END"
    )
    op.execute(f"UPDATE msg_deliveries SET reason = {code} WHERE error IS NOT NULL")  # noqa: S608
    if postgres:
        op.execute(TAKE_SLOTS_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS prasso_take_pacing_slots"
            "(text, integer, double precision, double precision, integer, double precision,"
            " double precision)"
        )
    with op.batch_alter_table("msg_cap_reservations") as batch:
        for name, column, target in CAP_KEYS:
            batch.create_foreign_key(name, target, [column], ["id"], ondelete="CASCADE")
    for name, columns, _ in SENT_ONLY:
        op.drop_index(name, table_name="msg_deliveries")
        op.create_index(name, "msg_deliveries", columns)
    with op.batch_alter_table("msg_deliveries") as batch:
        batch.create_foreign_key(
            MESSAGE_KEY, "msg_messages", ["msg_message_id"], ["id"], ondelete="CASCADE"
        )
        batch.drop_column("reason")
