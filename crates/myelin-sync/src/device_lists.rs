//! `device_lists` of an incremental sync: whose device lists a client must
//! refresh (`changed`) and whose it may forget (`left`).
//! Spec: <https://spec.matrix.org/v1.19/client-server-api/#extensions-to-sync-3>
//!
//! `changed`: users sharing a room with the syncing user whose devices or
//! keys changed in the token range (device-list stream), and users who
//! started sharing a room with them in the range (a member joined one of
//! their rooms, or they joined a room). `left`: users touched by a
//! membership change in the range who share no room with them any more.
//! Rooms count whether or not they are encrypted: a client asks about
//! fewer users than it is told of, never more.

use myelin_core::MatrixResult;
use myelin_storage::Storage;
use std::collections::BTreeSet;

use crate::room::db;
use crate::token::SyncToken;

/// Membership events of the user's rooms read per sync at most; past it
/// (a client long offline) the membership part is incomplete, and clients
/// re-query what they track after a long absence anyway.
const MEMBER_EVENTS_SCAN_MAX: u32 = 10_000;

/// `(changed, left)`, each sorted.
pub(crate) async fn device_lists(
    storage: &dyn Storage,
    user_id: &str,
    since: SyncToken,
    upto: SyncToken,
    room_nids: &[i64],
) -> MatrixResult<(Vec<String>, Vec<String>)> {
    let keys_moved = since.device_lists < upto.device_lists;
    let members_moved = since.events < upto.events && !room_nids.is_empty();
    if !keys_moved && !members_moved {
        return Ok((Vec::new(), Vec::new()));
    }
    let shared = db(myelin_rooms::presence::shared_users(storage, user_id).await)?;
    let mut changed = BTreeSet::new();
    if keys_moved {
        for user in db(storage
            .device_list_changes(since.device_lists, upto.device_lists)
            .await)?
        {
            if shared.contains(&user) {
                changed.insert(user);
            }
        }
    }
    let mut touched = BTreeSet::new();
    if members_moved {
        let events = db(storage
            .rooms_events_by_stream(room_nids, since.events, upto.events, MEMBER_EVENTS_SCAN_MAX)
            .await)?;
        let mut own_rooms = BTreeSet::new();
        for event in events.iter().filter(|e| e.kind == "m.room.member") {
            match event.state_key.as_deref() {
                Some(target) if target == user_id => {
                    own_rooms.insert(event.room_nid);
                }
                Some(target) => {
                    touched.insert(target.to_owned());
                }
                None => {}
            }
        }
        // The user joined or left a room: its members are touched.
        for room_nid in own_rooms {
            for member in db(storage.room_members(room_nid).await)? {
                touched.insert(member.user_id);
            }
        }
    }
    touched.remove(user_id);
    let mut left = Vec::new();
    for user in touched {
        if shared.contains(&user) {
            changed.insert(user);
        } else {
            left.push(user);
        }
    }
    Ok((changed.into_iter().collect(), left))
}
