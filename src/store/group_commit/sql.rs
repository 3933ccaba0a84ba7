//! The group commit's SQL and the writer's dedicated connection: every statement of a batch
//! is pipelined in one network round trip.

use futures_util::future::BoxFuture;
use tokio_postgres::Row;

use super::plan::{Committed, Plan};
use super::{Failure, Request, Write};
use crate::error::StoreError;
use crate::store::Store;

/// Reserves each room's seq range (the row lock makes seq order commit order, also across
/// nodes), inserts the new messages of senders who are members (keeping the mentions of
/// members only, counting replies on their parents) and their notification outbox rows, and
/// returns one row per message of the batch: (position, id, seq, created_at, mentions, status,
/// room_id, content, reply_to). Status 0: inserted (the last three NULL: the batch has them);
/// 3: a repeat of a stored (sender, client_msg_id), with the stored row (repeats never consume
/// a seq); 1 or 2 (the rest NULL): refused, the sender not a member (1) or a `reply_to` outside
/// the room (2). A room whose membership changed between this statement's snapshot and its row
/// lock (see `rooms.membership_version` in migration V5) reserves nothing: its messages are
/// neither inserted nor refused (no row), and answer `unavailable` (retry).
///
/// Written for plans that stay index probes whatever the statistics (the generic plan is made
/// on a young database): the stored row of a key is one `LIMIT 1` probe (LATERAL, which
/// PostgreSQL cannot flatten into a join: as `IN (SELECT … unnest …)` the cached generic plan
/// made on a young table was a hash semi-join over a bitmap scan of EVERY keyed message);
/// membership is one `LIMIT 1` probe per distinct (room, sender) of the batch, read back by
/// index from an array (an `EXISTS` per message became a hashed subplan reading every
/// membership row), the version one probe per room, and ids are drawn in `numbered` (in seq
/// order) so the result needs no join back to the inserted rows (with the CTEs' guessed sizes
/// that join became a nested loop: 600 rows cost 85 ms). The commit time is the transaction's
/// `now()`, the column's default. One statement finds the repeats and inserts the rest: a
/// separate lookup statement probed every key a second time (BENCHMARKS.md, "One statement
/// per batch").
const INSERT_SQL: &str = "WITH v AS (SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], \
             $5::INT[], $7::BIGINT[], $10::INT[]) AS v(room_id, sender_id, content, client_msg_id, ord, reply_to, pair)), \
     mem AS (SELECT array_agg((SELECT 1 FROM room_members rm \
             WHERE rm.room_id = p.room_id AND rm.user_id = p.sender_id LIMIT 1) IS NOT NULL ORDER BY p.i) AS ok \
         FROM unnest($11::BIGINT[], $12::BIGINT[]) WITH ORDINALITY AS p(room_id, sender_id, i)), \
     chk AS (SELECT v.*, d.id AS dup_id, d.room_id AS dup_room, d.seq AS dup_seq, d.content AS dup_content, \
             d.created_at AS dup_at, d.reply_to AS dup_reply, d.mentions AS dup_mentions, \
             COALESCE((SELECT ok FROM mem)[v.pair], false) AS member, \
             (v.reply_to IS NULL OR EXISTS (SELECT 1 FROM messages p \
                 WHERE p.id = v.reply_to AND p.room_id = v.room_id)) AS reply_ok \
         FROM v LEFT JOIN LATERAL (SELECT x.id, x.room_id, x.seq, x.content, x.created_at, x.reply_to, x.mentions \
             FROM messages x WHERE x.sender_id = v.sender_id AND x.client_msg_id = v.client_msg_id LIMIT 1) d ON true), \
     fresh AS (SELECT room_id, sender_id, content, client_msg_id, ord, reply_to FROM chk \
         WHERE dup_id IS NULL AND member AND reply_ok), \
     counts AS (SELECT c.*, (SELECT x.membership_version FROM rooms x WHERE x.id = c.room_id) AS version \
         FROM (SELECT room_id, count(*) AS n FROM fresh GROUP BY room_id) c), \
     upd AS (UPDATE rooms r SET last_seq = r.last_seq + c.n FROM counts c \
         WHERE r.id = c.room_id AND r.membership_version = c.version \
         RETURNING r.id, r.last_seq - c.n AS base), \
     men AS (SELECT k.ord, array_agg(k.uid ORDER BY k.uid) AS mentions \
         FROM unnest($8::INT[], $9::BIGINT[]) AS k(ord, uid) JOIN fresh f ON f.ord = k.ord \
         WHERE (SELECT 1 FROM room_members rm WHERE rm.room_id = f.room_id AND rm.user_id = k.uid LIMIT 1) IS NOT NULL \
         GROUP BY k.ord), \
     numbered AS (SELECT f.*, men.mentions, nextval('messages_id_seq') AS id, \
             u.base + row_number() OVER (PARTITION BY f.room_id ORDER BY f.ord) AS seq \
         FROM fresh f JOIN upd u ON u.id = f.room_id LEFT JOIN men ON men.ord = f.ord), \
     ins AS (INSERT INTO messages (id, room_id, seq, sender_id, content, client_msg_id, reply_to, mentions) \
         SELECT id, room_id, seq, sender_id, content, client_msg_id, reply_to, mentions FROM numbered), \
     rc AS (UPDATE messages p SET reply_count = p.reply_count + x.n \
         FROM (SELECT reply_to, count(*) AS n FROM fresh WHERE reply_to IS NOT NULL GROUP BY reply_to) x \
         WHERE p.id = x.reply_to), \
     ob AS (INSERT INTO notify_outbox (message_id) SELECT id FROM numbered WHERE $6) \
     SELECT n.ord, n.id, n.seq, now(), n.mentions, 0, NULL::BIGINT, NULL::TEXT, NULL::BIGINT FROM numbered n \
     UNION ALL \
     SELECT c.ord, c.dup_id, c.dup_seq, c.dup_at, c.dup_mentions, 3, c.dup_room, c.dup_content, c.dup_reply \
         FROM chk c WHERE c.dup_id IS NOT NULL \
     UNION ALL \
     SELECT c.ord, NULL, NULL, NULL, NULL, CASE WHEN c.member THEN 2 ELSE 1 END, NULL, NULL, NULL \
         FROM chk c WHERE c.dup_id IS NULL AND NOT (c.member AND c.reply_ok)";

/// An edit ($1 room, $2 user, $3 message, $4 content): the sender, a member, of a message not
/// deleted. Returns (status, seq, edited_at).
const EDIT_SQL: &str = "WITH m AS (SELECT sender_id FROM messages WHERE id = $3 AND room_id = $1 AND NOT deleted), \
     ok AS (SELECT 1 FROM m WHERE m.sender_id = $2 \
         AND EXISTS (SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2)), \
     s AS (UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 AND EXISTS (SELECT 1 FROM ok) \
         AND membership_version = (SELECT membership_version FROM rooms WHERE id = $1) RETURNING last_seq), \
     e AS (INSERT INTO room_events (room_id, seq, kind, message_id, user_id) \
         SELECT $1, s.last_seq, 'edit', $3, $2 FROM s RETURNING seq, created_at), \
     u AS (UPDATE messages SET content = $4::TEXT, edited_at = e.created_at FROM e WHERE id = $3) \
     SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM m) THEN 'not_found' \
                 WHEN NOT EXISTS (SELECT 1 FROM ok) THEN 'forbidden' \
                 WHEN NOT EXISTS (SELECT 1 FROM e) THEN 'retry' ELSE 'ok' END, \
            (SELECT seq FROM e), (SELECT created_at FROM e)";

/// A delete ($1 room, $2 user or NULL for a moderator, $3 message): content, mentions and
/// reactions erased, the row stays as a tombstone. Returns (status, seq, time).
const DELETE_SQL: &str = "WITH m AS (SELECT sender_id FROM messages WHERE id = $3 AND room_id = $1 AND NOT deleted), \
     ok AS (SELECT 1 FROM m WHERE $2::BIGINT IS NULL OR (m.sender_id = $2 \
         AND EXISTS (SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2))), \
     s AS (UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 AND EXISTS (SELECT 1 FROM ok) \
         AND membership_version = (SELECT membership_version FROM rooms WHERE id = $1) RETURNING last_seq), \
     e AS (INSERT INTO room_events (room_id, seq, kind, message_id, user_id) \
         SELECT $1, s.last_seq, 'delete', $3, $2 FROM s RETURNING seq, created_at), \
     u AS (UPDATE messages SET content = '', deleted = true, mentions = NULL, reactions = NULL \
         FROM e WHERE id = $3), \
     r AS (DELETE FROM reactions WHERE message_id = $3 AND EXISTS (SELECT 1 FROM e)) \
     SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM m) THEN 'not_found' \
                 WHEN NOT EXISTS (SELECT 1 FROM ok) THEN 'forbidden' \
                 WHEN NOT EXISTS (SELECT 1 FROM e) THEN 'retry' ELSE 'ok' END, \
            (SELECT seq FROM e), (SELECT created_at FROM e)";

/// A reaction ($1 room, $2 user, $3 message, $4 emoji, $5 on, $6 most distinct emoji): one
/// row per (message, user, emoji), the counts kept on the message. An add that exists or a
/// remove that does not changes nothing ('noop', no seq). Returns (status, seq, time).
const REACT_SQL: &str = "WITH m AS (SELECT reactions FROM messages WHERE id = $3 AND room_id = $1 AND NOT deleted), \
     mem AS (SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2), \
     fits AS (SELECT 1 FROM m WHERE NOT $5 OR m.reactions ? $4::TEXT \
         OR (SELECT count(*) FROM jsonb_object_keys(COALESCE(m.reactions, '{}'))) < $6::BIGINT), \
     ins AS (INSERT INTO reactions (message_id, user_id, emoji) SELECT $3, $2, $4::TEXT FROM fits, mem WHERE $5 \
         ON CONFLICT DO NOTHING RETURNING 1), \
     del AS (DELETE FROM reactions WHERE message_id = $3 AND user_id = $2 AND emoji = $4::TEXT AND NOT $5 \
         AND EXISTS (SELECT 1 FROM m) AND EXISTS (SELECT 1 FROM mem) RETURNING 1), \
     s AS (UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 \
         AND (EXISTS (SELECT 1 FROM ins) OR EXISTS (SELECT 1 FROM del)) \
         AND membership_version = (SELECT membership_version FROM rooms WHERE id = $1) RETURNING last_seq), \
     e AS (INSERT INTO room_events (room_id, seq, kind, message_id, user_id, emoji, flag) \
         SELECT $1, s.last_seq, 'reaction', $3, $2, $4::TEXT, $5 FROM s RETURNING seq, created_at), \
     u AS (UPDATE messages SET reactions = CASE \
             WHEN $5 THEN jsonb_set(COALESCE(reactions, '{}'), ARRAY[$4::TEXT], \
                 to_jsonb(COALESCE((reactions ->> $4::TEXT)::INT, 0) + 1)) \
             WHEN (reactions ->> $4::TEXT)::INT > 1 THEN jsonb_set(reactions, ARRAY[$4::TEXT], \
                 to_jsonb((reactions ->> $4::TEXT)::INT - 1)) \
             ELSE NULLIF(reactions - $4::TEXT, '{}') END \
         FROM e WHERE id = $3) \
     SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM m) THEN 'not_found' \
                 WHEN NOT EXISTS (SELECT 1 FROM mem) THEN 'forbidden' \
                 WHEN EXISTS (SELECT 1 FROM e) THEN 'ok' \
                 WHEN $5 AND NOT EXISTS (SELECT 1 FROM fits) THEN 'too_large' ELSE 'noop' END, \
            (SELECT seq FROM e), (SELECT created_at FROM e)";

/// Receipt watermarks, one row per (room, member), only ever moving forward.
const MARKS_SQL: &str = "UPDATE room_members m SET delivered_seq = GREATEST(m.delivered_seq, v.d), \
         read_seq = GREATEST(m.read_seq, v.r) \
     FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[]) AS v(room, uid, d, r) \
     WHERE m.room_id = v.room AND m.user_id = v.uid";

/// The seed's per-message booleans (touching only rows that change).
const FLAGS_SQL: &str = "UPDATE messages m SET delivered = m.delivered OR v.d, read = m.read OR v.r \
     FROM unnest($1::BIGINT[], $2::BOOL[], $3::BOOL[]) AS v(id, d, r) \
     WHERE m.id = v.id AND ((v.d AND NOT m.delivered) OR (v.r AND NOT m.read))";

/// The booleans after the update, for the relay.
const STATE_SQL: &str = "SELECT id, delivered, read FROM messages WHERE id = ANY($1)";

/// The writer's dedicated connection and its prepared statements.
pub(super) struct WriterConn {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
    edit: tokio_postgres::Statement,
    delete: tokio_postgres::Statement,
    react: tokio_postgres::Statement,
    marks: tokio_postgres::Statement,
    flags: tokio_postgres::Statement,
    state: tokio_postgres::Statement,
}

impl WriterConn {
    /// Opens the writer's own connection (not from the pool) and prepares its statements.
    pub(super) async fn open(store: &Store) -> Result<Self, StoreError> {
        let client = store.pool().dedicated_connection().await.map_err(StoreError::from)?;
        // The statements below are prepared once and PostgreSQL caches a generic plan
        // after five runs. On a young database that plan is made while the tables are
        // nearly empty, where scanning them whole is cheapest, and it stays cached until
        // the first ANALYZE (measured: p99 ack 49–162 ms instead of ~7 ms at 10 k msgs/s).
        // Every statement here is meant to probe indexes: INSERT_SQL's key lookup is
        // written so it can only probe, and sequential scans (e.g. of `rooms` in the seq
        // reservation) are ruled out for this connection.
        client.batch_execute("SET enable_seqscan = off").await?;
        let (insert, edit, delete, react) = tokio::try_join!(
            client.prepare(INSERT_SQL),
            client.prepare(EDIT_SQL),
            client.prepare(DELETE_SQL),
            client.prepare(REACT_SQL),
        )?;
        let (marks, flags, state) =
            tokio::try_join!(client.prepare(MARKS_SQL), client.prepare(FLAGS_SQL), client.prepare(STATE_SQL))?;
        Ok(WriterConn { client, insert, edit, delete, react, marks, flags, state })
    }

    /// Whether the connection is known to be dead.
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Writes one batch in ONE network round trip: BEGIN, the statements and COMMIT are
    /// pipelined (prepared statements are sent on first poll, in order), and repeats, seq
    /// reservation, insert and outbox rows are one statement. `Failure::Unknown` means this
    /// connection must not be used again.
    pub(super) async fn commit<R>(&self, batch: &[Request<R>], limits: Limits) -> Result<Committed, Failure> {
        let plan = Plan::new(batch);
        let c = &self.client;
        let insert = async {
            if plan.ins_room.is_empty() {
                return Ok(Vec::new());
            }
            let params: [P; 12] = [
                &plan.ins_room,
                &plan.ins_sender,
                &plan.ins_content,
                &plan.ins_key,
                &plan.ins_ord,
                &limits.outbox,
                &plan.ins_reply,
                &plan.mention_ord,
                &plan.mention_uid,
                &plan.ins_pair,
                &plan.pair_room,
                &plan.pair_sender,
            ];
            c.query(&self.insert, &params).await
        };
        // `Plan::events` holds edits, deletes and reactions only: one row each, in its order.
        let events = futures_util::future::try_join_all(
            plan.events.iter().filter_map(|&pos| self.event(&batch[pos].write, limits)),
        );
        let receipts = self.receipts(&plan);
        let (begin, inserted, events, states, commit) =
            tokio::join!(c.batch_execute("BEGIN"), insert, events, receipts, c.batch_execute("COMMIT"));

        // A statement's database error aborted the transaction: COMMIT rolled back, retry.
        let results = [begin.as_ref().err(), inserted.as_ref().err(), events.as_ref().err(), states.as_ref().err()];
        if let Some(e) = results.into_iter().flatten().find(|e| e.as_db_error().is_some()) {
            return Err(Failure::Retry(StoreError::Db(e.to_string())));
        }
        if let Err(e) = commit {
            // The connection broke with COMMIT possibly applied.
            return Err(Failure::Unknown(e.into()));
        }
        let (Ok(inserted), Ok(events), Ok(states)) = (inserted, events, states) else {
            return Err(Failure::Unknown(StoreError::Unavailable("writer connection failed".into())));
        };
        Ok(plan.outcome(batch, &inserted, &events, &states))
    }

    /// The statement of one edit, delete or reaction (`None` for other writes).
    fn event<'a>(
        &'a self,
        write: &'a Write,
        limits: Limits,
    ) -> Option<BoxFuture<'a, Result<Row, tokio_postgres::Error>>> {
        let c = &self.client;
        Some(match write {
            Write::Edit { room_id, user_id, message_id, content } => {
                Box::pin(async move { c.query_one(&self.edit, &[room_id, user_id, message_id, content]).await })
            }
            Write::Delete { room_id, user_id, message_id } => {
                Box::pin(async move { c.query_one(&self.delete, &[room_id, user_id, message_id]).await })
            }
            Write::React { room_id, user_id, message_id, emoji, on } => {
                let max = limits.reactions_max;
                Box::pin(
                    async move { c.query_one(&self.react, &[room_id, user_id, message_id, emoji, on, &max]).await },
                )
            }
            Write::Message { .. } | Write::Receipt { .. } => return None,
        })
    }

    /// The receipt statements of a batch (watermarks, the booleans, their state after).
    async fn receipts(&self, plan: &Plan<'_>) -> Result<Vec<Row>, tokio_postgres::Error> {
        if plan.mark_room.is_empty() {
            return Ok(Vec::new());
        }
        let c = &self.client;
        let marks: [P; 4] = [&plan.mark_room, &plan.mark_user, &plan.mark_d, &plan.mark_r];
        let flags: [P; 3] = [&plan.flag_id, &plan.flag_d, &plan.flag_r];
        let state: [P; 1] = [&plan.flag_id];
        let (_, _, rows) =
            tokio::join!(c.execute(&self.marks, &marks), c.execute(&self.flags, &flags), c.query(&self.state, &state));
        rows
    }
}

/// A statement parameter.
type P<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Per-batch switches of the writer (from its settings).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Write `notify_outbox` rows for new messages.
    pub(super) outbox: bool,
    /// Most distinct emoji on one message.
    pub(super) reactions_max: i64,
}
