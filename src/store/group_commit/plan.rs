//! A batch turned into the parameters of a few set-based statements (plus one statement per
//! edit, delete or reaction), and the committed rows mapped back to the requests that asked
//! for them. Pure logic over rows.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{Request, Write, RETRY_AFTER_MS};
use crate::error::{ApiError, ErrorCode};
use crate::model::{Delete, Edit, Message, Reaction, ReceiptState, RoomEvent};

/// A receipt of the batch, by position.
pub(super) struct ReceiptRow {
    pos: usize,
    room_id: i64,
    user_id: i64,
    message_id: i64,
}

/// A committed batch: what to publish and whom to answer.
pub(super) struct Committed {
    /// New room events per batch position, in (room, seq) order.
    pub(super) new: Vec<(usize, RoomEvent)>,
    /// Idempotent repeats: batch position → the original row.
    pub(super) repeats: Vec<(usize, Message)>,
    /// Receipts: batch position → the relay to publish.
    pub(super) receipts: Vec<(usize, ReceiptState)>,
    /// Positions refused on their own (not a member, unknown message, ...).
    pub(super) failed: Vec<(usize, ApiError)>,
}

/// A batch turned into statement parameters.
#[derive(Default)]
pub(super) struct Plan<'a> {
    pub(super) ins_room: Vec<i64>,
    pub(super) ins_sender: Vec<i64>,
    pub(super) ins_content: Vec<&'a str>,
    pub(super) ins_key: Vec<Option<&'a str>>,
    pub(super) ins_ord: Vec<i32>,
    pub(super) ins_reply: Vec<Option<i64>>,
    /// Per new message, its (room, sender) pair: a 1-based index into `pair_room`/`pair_sender`
    /// (membership is probed once per pair).
    pub(super) ins_pair: Vec<i32>,
    pub(super) pair_room: Vec<i64>,
    pub(super) pair_sender: Vec<i64>,
    /// (batch position, user) per mention of a new message.
    pub(super) mention_ord: Vec<i32>,
    pub(super) mention_uid: Vec<i64>,
    /// (position, position of the same (sender, client_msg_id) earlier in the batch)
    pub(super) in_batch_repeats: Vec<(usize, usize)>,
    /// Edits, deletes and reactions by position, in batch order (one statement each).
    pub(super) events: Vec<usize>,
    pub(super) mark_room: Vec<i64>,
    pub(super) mark_user: Vec<i64>,
    pub(super) mark_d: Vec<i64>,
    pub(super) mark_r: Vec<i64>,
    pub(super) flag_id: Vec<i64>,
    pub(super) flag_d: Vec<bool>,
    pub(super) flag_r: Vec<bool>,
    pub(super) receipts: Vec<ReceiptRow>,
}

impl<'a> Plan<'a> {
    /// Turns a batch into statement parameters: repeats inside the batch found, receipts
    /// coalesced to one watermark row per (room, member) and one flag row per message.
    pub(super) fn new<R>(batch: &'a [Request<R>]) -> Self {
        let mut p = Plan::default();
        let mut first_of: HashMap<(i64, &str), usize> = HashMap::new();
        let mut marks: HashMap<(i64, i64), (i64, i64)> = HashMap::new();
        let mut flags: HashMap<i64, (bool, bool)> = HashMap::new();
        let mut pairs: HashMap<(i64, i64), i32> = HashMap::new();
        for (pos, r) in batch.iter().enumerate() {
            match &r.write {
                Write::Message { room_id, sender_id, content, client_msg_id, reply_to, mentions } => {
                    if let Some(k) = client_msg_id {
                        if let Some(&orig) = first_of.get(&(*sender_id, k.as_str())) {
                            p.in_batch_repeats.push((pos, orig));
                            continue;
                        }
                        first_of.insert((*sender_id, k.as_str()), pos);
                    }
                    p.ins_room.push(*room_id);
                    p.ins_sender.push(*sender_id);
                    p.ins_content.push(content);
                    p.ins_key.push(client_msg_id.as_deref());
                    p.ins_ord.push(pos as i32);
                    p.ins_reply.push(*reply_to);
                    let next = pairs.len() as i32 + 1;
                    let pair = *pairs.entry((*room_id, *sender_id)).or_insert(next);
                    if pair == next {
                        p.pair_room.push(*room_id);
                        p.pair_sender.push(*sender_id);
                    }
                    p.ins_pair.push(pair);
                    p.mention_ord.extend(mentions.iter().map(|_| pos as i32));
                    p.mention_uid.extend_from_slice(mentions);
                }
                Write::Edit { .. } | Write::Delete { .. } | Write::React { .. } => p.events.push(pos),
                &Write::Receipt { room_id, user_id, message_id, seq, sender_id, delivered, read } => {
                    let e = marks.entry((room_id, user_id)).or_default();
                    if delivered || read {
                        e.0 = e.0.max(seq);
                    }
                    if read {
                        e.1 = e.1.max(seq);
                    }
                    let f = flags.entry(message_id).or_default();
                    if user_id != sender_id {
                        f.0 |= delivered || read;
                        f.1 |= read;
                    }
                    p.receipts.push(ReceiptRow { pos, room_id, user_id, message_id });
                }
            }
        }
        for ((room, user), (d, r)) in marks {
            p.mark_room.push(room);
            p.mark_user.push(user);
            p.mark_d.push(d);
            p.mark_r.push(r);
        }
        for (id, (d, r)) in flags {
            p.flag_id.push(id);
            p.flag_d.push(d);
            p.flag_r.push(r);
        }
        p
    }

    /// Maps the committed rows back to the batch's requests. `inserted`: the insert's rows
    /// (see `INSERT_SQL`: position, id, seq, time, mentions, status, and a repeat's stored
    /// room, content and `reply_to`); `events`: one row per [`Plan::events`] entry (status,
    /// seq, time).
    pub(super) fn outcome<R>(
        &self,
        batch: &[Request<R>],
        inserted: &[Row],
        events: &[Row],
        states: &[Row],
    ) -> Committed {
        let mut done = Committed { new: Vec::new(), repeats: Vec::new(), receipts: Vec::new(), failed: Vec::new() };
        let new = self.messages(batch, inserted, &mut done);
        // Position → index in `new`, for the repeats inside the batch.
        let mut at = vec![None; batch.len()];
        for (i, (pos, _)) in new.iter().enumerate() {
            at[*pos] = Some(i);
        }
        self.unanswered(&at, &mut done);
        self.in_batch_repeats(&new, &at, &mut done);
        done.new = new.into_iter().map(|(pos, m)| (pos, RoomEvent::Message(m))).collect();
        for (&pos, row) in self.events.iter().zip(events) {
            match event_outcome(&batch[pos].write, row) {
                Ok(Some(e)) => done.new.push((pos, e)),
                Ok(None) => {}
                Err(err) => done.failed.push((pos, err)),
            }
        }
        // The messages arrive in (room, seq) order (INSERT_SQL numbers them so), which this
        // stable sort only checks; events (one statement each) are merged in.
        done.new.sort_by_key(|(_, e)| (e.room_id(), e.seq()));
        self.receipt_states(states, &mut done);
        done
    }

    /// New messages (position, message) in the statement's row order; repeats of stored rows
    /// go to `done.repeats`, refusals (not a member, bad `reply_to`) to `done.failed`.
    fn messages<R>(&self, batch: &[Request<R>], inserted: &[Row], done: &mut Committed) -> Vec<(usize, Message)> {
        let mut new = Vec::with_capacity(inserted.len());
        for r in inserted {
            let pos = r.get::<_, i32>(0) as usize;
            let status = r.get::<_, i32>(5);
            match status {
                0 | 3 => {}
                1 => {
                    done.failed.push((pos, ApiError::forbidden("you are not a member of this room")));
                    continue;
                }
                _ => {
                    done.failed.push((pos, ApiError::not_found("reply_to names no message of this room")));
                    continue;
                }
            }
            let Some(Request {
                write: Write::Message { room_id, sender_id, content, client_msg_id, reply_to, .. },
                ..
            }) = batch.get(pos)
            else {
                continue;
            };
            let mut m = Message {
                id: r.get(1),
                room_id: *room_id,
                seq: r.get(2),
                sender_id: *sender_id,
                content: String::new(),
                timestamp: r.get(3),
                client_msg_id: client_msg_id.clone(),
                reply_to: *reply_to,
                mentions: r.get::<_, Option<Vec<i64>>>(4).unwrap_or_default(),
            };
            if status == 3 {
                // The stored row answers, whatever this resend carried.
                (m.room_id, m.content, m.reply_to) = (r.get(6), r.get(7), r.get(8));
                done.repeats.push((pos, m));
            } else {
                m.content = content.clone();
                new.push((pos, m));
            }
        }
        new
    }

    /// New messages the statement neither inserted, refused nor found stored: their room's
    /// membership changed while this batch waited for its lock (the retry is checked against
    /// the new membership). `at`: which positions were inserted.
    fn unanswered(&self, at: &[Option<usize>], done: &mut Committed) {
        let mut answered: Vec<bool> = at.iter().map(Option::is_some).collect();
        let refused = done.failed.iter().map(|(pos, _)| *pos);
        for pos in refused.chain(done.repeats.iter().map(|(pos, _)| *pos)) {
            if let Some(a) = answered.get_mut(pos) {
                *a = true;
            }
        }
        for pos in self.ins_ord.iter().map(|&ord| ord as usize).filter(|&pos| !answered[pos]) {
            done.failed.push((pos, raced()));
        }
    }

    /// Repeats of a (sender, client_msg_id) earlier in this batch answer as that one did.
    fn in_batch_repeats(&self, new: &[(usize, Message)], at: &[Option<usize>], done: &mut Committed) {
        for &(pos, orig) in &self.in_batch_repeats {
            let inserted = at[orig].map(|i| &new[i].1);
            let original = inserted.or_else(|| done.repeats.iter().find(|(p, _)| *p == orig).map(|(_, m)| m));
            match original {
                Some(m) => done.repeats.push((pos, m.clone())),
                None => {
                    let err = done.failed.iter().find(|(p, _)| *p == orig).map(|(_, e)| e.clone());
                    let err =
                        err.unwrap_or_else(|| ApiError::unavailable("write not confirmed; retry", RETRY_AFTER_MS));
                    done.failed.push((pos, err));
                }
            }
        }
    }

    fn receipt_states(&self, states: &[Row], done: &mut Committed) {
        let state: HashMap<i64, (bool, bool)> = states.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
        for rc in &self.receipts {
            match state.get(&rc.message_id) {
                Some(&(delivered, read)) => done.receipts.push((
                    rc.pos,
                    ReceiptState {
                        room_id: rc.room_id,
                        user_id: rc.user_id,
                        message_id: rc.message_id,
                        delivered,
                        read,
                    },
                )),
                None => done.failed.push((rc.pos, ApiError::not_found("no such message"))),
            }
        }
    }
}

/// What an edit, delete or reaction statement reported: the committed event, nothing (a
/// reaction that changed nothing), or the refusal.
fn event_outcome(write: &Write, row: &Row) -> Result<Option<RoomEvent>, ApiError> {
    let status: &str = row.get(0);
    let (seq, at): (Option<i64>, Option<DateTime<Utc>>) = (row.get(1), row.get(2));
    match status {
        "ok" => {}
        "noop" => return Ok(None),
        "not_found" => return Err(ApiError::not_found("no such message (or it was deleted)")),
        "forbidden" => return Err(ApiError::forbidden(forbidden_why(write))),
        "retry" => return Err(raced()),
        "too_large" => return Err(ApiError::new(ErrorCode::TooLarge, "this message has the most distinct reactions")),
        other => return Err(ApiError::new(ErrorCode::Internal, format!("unexpected event status {other:?}"))),
    }
    let (Some(seq), Some(at)) = (seq, at) else {
        return Err(ApiError::new(ErrorCode::Internal, "event committed without a seq"));
    };
    Ok(Some(match write {
        Write::Edit { room_id, user_id, message_id, content } => RoomEvent::Edit(Edit {
            room_id: *room_id,
            seq,
            message_id: *message_id,
            user_id: *user_id,
            content: content.clone(),
            edited_at: at,
        }),
        Write::Delete { room_id, user_id, message_id } => {
            RoomEvent::Delete(Delete { room_id: *room_id, seq, message_id: *message_id, user_id: *user_id })
        }
        Write::React { room_id, user_id, message_id, emoji, on } => RoomEvent::Reaction(Reaction {
            room_id: *room_id,
            seq,
            message_id: *message_id,
            user_id: *user_id,
            emoji: emoji.clone(),
            on: *on,
        }),
        Write::Message { .. } | Write::Receipt { .. } => return Ok(None),
    }))
}

/// The write raced another one (the same key stored by another node, or the room's
/// membership changed while it waited for the room's lock; README "Room events"): nothing was
/// stored; a retry with the same `client_msg_id` is safe.
fn raced() -> ApiError {
    ApiError::unavailable("the write raced another change of the room; retry", RETRY_AFTER_MS)
}

fn forbidden_why(write: &Write) -> &'static str {
    match write {
        Write::Edit { .. } => "only the sender edits a message, and only while a member of its room",
        Write::Delete { .. } => "only the sender deletes a message, and only while a member of its room",
        _ => "you are not a member of this room",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(room_id: i64, sender_id: i64) -> Request<()> {
        let write = Write::Message {
            room_id,
            sender_id,
            content: "x".into(),
            client_msg_id: None,
            reply_to: None,
            mentions: vec![2, 3],
        };
        Request { write, reply: (), deadline: tokio::time::Instant::now() }
    }

    /// Membership is probed once per (room, sender) of a batch, however many messages it has.
    #[test]
    fn membership_pairs_are_deduplicated() {
        let batch = [message(1, 7), message(1, 7), message(2, 7), message(1, 8), message(2, 7)];
        let p = Plan::new(&batch);
        assert_eq!(p.ins_pair, vec![1, 1, 2, 3, 2]);
        assert_eq!((p.pair_room, p.pair_sender), (vec![1, 2, 1], vec![7, 7, 8]));
        assert_eq!(p.mention_ord, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(p.mention_uid.len(), 10);
    }
}
