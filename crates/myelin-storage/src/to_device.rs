//! To-device messages (`PUT /sendToDevice`): an inbox per device.
//!
//! Model: a request's messages share one to-device stream position (from the
//! writer's tracker; [`crate::Stream::ToDevice`]); each recipient device's
//! inbox is read in position order by `/sync` and a message is deleted only
//! when the device syncs with a token past it. The greatest position ever
//! written is kept even after its messages are deleted, so positions never go
//! back after a restart.

use async_trait::async_trait;
use serde_json::Value;

use crate::StorageResult;

/// Messages one read returns at most.
pub const TO_DEVICE_PAGE_MAX: u32 = 1_000;

/// One message in a device's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToDeviceMessage {
    pub stream_pos: i64,
    pub sender: String,
    /// The event `type`.
    pub kind: String,
    pub content: Value,
}

/// One recipient of a request: `(user_id, device_id, content)`.
pub type ToDeviceRecipient = (String, String, Value);

#[async_trait]
pub trait ToDeviceStore: Send + Sync {
    /// Stores the messages of one request at `stream_pos`, once per
    /// transaction of the sending device: `false` (and nothing stored) when
    /// `(sender, sender_device, txn_id)` was seen before.
    async fn put_to_device(
        &self,
        sender: &str,
        sender_device: &str,
        txn_id: &str,
        kind: &str,
        recipients: &[ToDeviceRecipient],
        stream_pos: i64,
    ) -> StorageResult<bool>;
    /// A device's messages with `after < stream_pos <= upto`, oldest first,
    /// at most `limit` (capped at [`TO_DEVICE_PAGE_MAX`]).
    async fn to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> StorageResult<Vec<ToDeviceMessage>>;
    /// Deletes a device's messages with `stream_pos <= upto` (acknowledged);
    /// returns how many.
    async fn delete_to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
    ) -> StorageResult<u64>;
}
