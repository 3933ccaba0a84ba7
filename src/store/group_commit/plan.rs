//! A batch turned into the parameters of a few set-based statements, and the committed rows
//! mapped back to the requests that asked for them. Pure logic over rows.

use std::collections::HashMap;

use tokio_postgres::Row;

use super::{Request, Write, RETRY_AFTER_MS};
use crate::error::ApiError;
use crate::model::{Message, ReceiptState};
use crate::store::messages::message_from_row;

/// A receipt of the batch, by position.
pub(super) struct ReceiptRow {
    pos: usize,
    room_id: i64,
    user_id: i64,
    message_id: i64,
}

/// A committed batch: what to publish and whom to answer.
pub(super) struct Committed {
    /// New messages per batch position.
    pub(super) new: Vec<(usize, Message)>,
    /// Idempotent repeats: batch position → the original row.
    pub(super) repeats: Vec<(usize, Message)>,
    /// Receipts: batch position → the relay to publish.
    pub(super) receipts: Vec<(usize, ReceiptState)>,
    /// Positions that failed on their own (e.g. unknown room).
    pub(super) failed: Vec<(usize, ApiError)>,
}

/// A batch turned into statement parameters.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) keyed_senders: Vec<i64>,
    pub(super) keyed_keys: Vec<String>,
    pub(super) ins_room: Vec<i64>,
    pub(super) ins_sender: Vec<i64>,
    pub(super) ins_content: Vec<String>,
    pub(super) ins_key: Vec<Option<String>>,
    pub(super) ins_ord: Vec<i32>,
    /// (position, position of the same (sender, client_msg_id) earlier in the batch)
    pub(super) in_batch_repeats: Vec<(usize, usize)>,
    pub(super) mark_room: Vec<i64>,
    pub(super) mark_user: Vec<i64>,
    pub(super) mark_d: Vec<i64>,
    pub(super) mark_r: Vec<i64>,
    pub(super) flag_id: Vec<i64>,
    pub(super) flag_d: Vec<bool>,
    pub(super) flag_r: Vec<bool>,
    pub(super) receipts: Vec<ReceiptRow>,
}

impl Plan {
    /// Turns a batch into statement parameters: repeats inside the batch found, receipts
    /// coalesced to one watermark row per (room, member) and one flag row per message.
    pub(super) fn new<R>(batch: &[Request<R>]) -> Self {
        let mut p = Plan::default();
        let mut first_of: HashMap<(i64, &str), usize> = HashMap::new();
        let mut marks: HashMap<(i64, i64), (i64, i64)> = HashMap::new();
        let mut flags: HashMap<i64, (bool, bool)> = HashMap::new();
        for (pos, r) in batch.iter().enumerate() {
            match &r.write {
                Write::Message { room_id, sender_id, content, client_msg_id } => {
                    if let Some(k) = client_msg_id {
                        if let Some(&orig) = first_of.get(&(*sender_id, k.as_str())) {
                            p.in_batch_repeats.push((pos, orig));
                            continue;
                        }
                        first_of.insert((*sender_id, k.as_str()), pos);
                        p.keyed_senders.push(*sender_id);
                        p.keyed_keys.push(k.clone());
                    }
                    p.ins_room.push(*room_id);
                    p.ins_sender.push(*sender_id);
                    p.ins_content.push(content.clone());
                    p.ins_key.push(client_msg_id.clone());
                    p.ins_ord.push(pos as i32);
                }
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

    /// Maps the committed rows back to the batch's requests.
    pub(super) fn outcome<R>(&self, batch: &[Request<R>], dups: &[Row], inserted: &[Row], states: &[Row]) -> Committed {
        let mut done = Committed { new: Vec::new(), repeats: Vec::new(), receipts: Vec::new(), failed: Vec::new() };
        let existing: HashMap<(i64, String), Message> = dups
            .iter()
            .map(message_from_row)
            .filter_map(|m| m.client_msg_id.clone().map(|k| ((m.sender_id, k), m)))
            .collect();
        let mut by_pos: HashMap<usize, Message> = HashMap::new();
        for r in inserted {
            let pos = r.get::<_, i32>(0) as usize;
            if let Some(Request { write: Write::Message { room_id, sender_id, content, client_msg_id }, .. }) =
                batch.get(pos)
            {
                let m = Message {
                    id: r.get(1),
                    room_id: *room_id,
                    seq: r.get(2),
                    sender_id: *sender_id,
                    content: content.clone(),
                    timestamp: r.get(3),
                    client_msg_id: client_msg_id.clone(),
                };
                by_pos.insert(pos, m);
            }
        }
        for &ord in &self.ins_ord {
            let pos = ord as usize;
            if by_pos.contains_key(&pos) {
                continue;
            }
            let Write::Message { sender_id, client_msg_id, .. } = &batch[pos].write else { continue };
            match client_msg_id.as_ref().and_then(|k| existing.get(&(*sender_id, k.clone()))) {
                Some(orig) => done.repeats.push((pos, orig.clone())),
                // Stored by another node between our two statements: the retry finds it.
                None => {
                    done.failed.push((pos, ApiError::unavailable("write raced another node; retry", RETRY_AFTER_MS)))
                }
            }
        }
        for &(pos, orig) in &self.in_batch_repeats {
            let original = by_pos.get(&orig).or_else(|| done.repeats.iter().find(|(p, _)| *p == orig).map(|(_, m)| m));
            match original {
                Some(m) => done.repeats.push((pos, m.clone())),
                None => done.failed.push((pos, ApiError::unavailable("write not confirmed; retry", RETRY_AFTER_MS))),
            }
        }
        done.new = by_pos.into_iter().collect();
        done.new.sort_by_key(|(_, m)| (m.room_id, m.seq));

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
        done
    }
}
