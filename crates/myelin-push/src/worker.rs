//! One pusher's delivery task.

use myelin_core::time::now_ms;
use myelin_storage::{Notification, Pusher, StorageResult};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::payload::{self, EventDetails};
use crate::{BATCH_MAX, KIND_HTTP, PusherKey, Shared};

/// Why a task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Told to stop (pusher deleted or replaced, or shutdown).
    Stopped,
    /// The pusher is no longer stored, or cannot be delivered.
    Gone,
    /// The gateway rejected the pushkey; the pusher was deleted.
    Rejected,
}

/// The outcome of one notification.
enum Step {
    Delivered,
    /// Given up, or its event is gone: progress moves past it anyway.
    Skipped,
    End(End),
}

/// The task: waits for the task it replaces, delivers until told to stop,
/// and then leaves the service's map.
pub(crate) async fn run(
    shared: Arc<Shared>,
    key: PusherKey,
    generation: u64,
    stop: watch::Receiver<bool>,
    previous: Option<JoinHandle<()>>,
) {
    if let Some(previous) = previous {
        // Its progress is recorded once it has ended.
        let _ = previous.await;
    }
    let mut worker = Worker {
        shared: &shared,
        key: &key,
        stop,
        delivered: 0,
        failing_since: None,
    };
    let end = worker.deliver().await;
    tracing::debug!(user_id = %key.user_id, app_id = %key.app_id, ?end, "pusher task ended");
    shared.finished(&key, generation);
}

struct Worker<'a> {
    shared: &'a Shared,
    key: &'a PusherKey,
    stop: watch::Receiver<bool>,
    /// The stored `last_stream_pos`.
    delivered: i64,
    /// The stored `failing_since_ms`.
    failing_since: Option<i64>,
}

impl Worker<'_> {
    async fn deliver(&mut self) -> End {
        let Some(pusher) = self.load().await else {
            return if self.stopped() {
                End::Stopped
            } else {
                End::Gone
            };
        };
        if pusher.kind != KIND_HTTP {
            return End::Gone;
        }
        let Some(url) = pusher.data.get("url").and_then(Value::as_str) else {
            tracing::warn!(user_id = %self.key.user_id, app_id = %self.key.app_id, "http pusher without a url; not delivering");
            return End::Gone;
        };
        self.delivered = pusher.last_stream_pos;
        self.failing_since = pusher.failing_since_ms;
        // Read up to here: no notification lies in (delivered, cursor]
        // that is not delivered or skipped.
        let mut cursor = self.delivered;
        // Subscribed before the first read, so no wake-up is lost.
        let mut news = self.shared.notifier.subscribe(&self.key.user_id);
        // Read everything up to the watermark: wait for news before the next
        // read (on a busy server the watermark moves all the time, mostly
        // for other users).
        let mut caught_up = false;
        loop {
            if self.stopped() {
                return End::Stopped;
            }
            let upto = *self.shared.watermark.borrow();
            if upto <= cursor || caught_up {
                caught_up = false;
                let mut stop = self.stop.clone();
                tokio::select! {
                    changed = news.changed() => {
                        if changed.is_err() {
                            // The notifier closed: the server is stopping.
                            return End::Stopped;
                        }
                    }
                    _ = stop.wait_for(|s| *s) => return End::Stopped,
                }
                continue;
            }
            let batch = match self
                .shared
                .storage
                .notifications_after(&self.key.user_id, cursor, upto, BATCH_MAX)
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, user_id = %self.key.user_id, "cannot read notifications for a pusher");
                    if !self.pause(self.initial_delay()).await {
                        return End::Stopped;
                    }
                    continue;
                }
            };
            let full = batch.len() >= BATCH_MAX as usize;
            for notification in &batch {
                if self.stopped() {
                    return End::Stopped;
                }
                match self.deliver_one(&pusher, url, notification).await {
                    Step::Delivered | Step::Skipped => {
                        cursor = notification.stream_pos;
                        if let Err(end) = self.record(notification.stream_pos).await {
                            return end;
                        }
                    }
                    Step::End(End::Rejected) => {
                        self.reject().await;
                        return End::Rejected;
                    }
                    Step::End(end) => return end,
                }
            }
            if !full {
                cursor = cursor.max(upto);
                caught_up = true;
            }
        }
    }

    /// Sends one notification, retrying until it is delivered or given up.
    async fn deliver_one(&mut self, pusher: &Pusher, url: &str, n: &Notification) -> Step {
        let config = &self.shared.config;
        let max_delay = Duration::from_millis(config.retry_max_ms);
        let give_up_ms = i64::try_from(config.give_up_after_ms).unwrap_or(i64::MAX);
        let mut delay = self.initial_delay();
        loop {
            let details = match self.details(pusher, n).await {
                Ok(Some(details)) => details,
                Ok(None) => {
                    metrics::counter!("myelin_push_notifications_skipped_total", "reason" => "event_gone").increment(1);
                    return Step::Skipped;
                }
                Err(e) => {
                    tracing::warn!(error = %e, event_id = %n.event_id, "cannot read a notified event");
                    if !self.pause(delay).await {
                        return Step::End(End::Stopped);
                    }
                    delay = (delay * 2).min(max_delay);
                    continue;
                }
            };
            let body = payload::notify_body(pusher, n, &details);
            let permit = {
                let mut stop = self.stop.clone();
                tokio::select! {
                    permit = self.shared.requests.acquire() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return Step::End(End::Stopped),
                    },
                    _ = stop.wait_for(|s| *s) => return Step::End(End::Stopped),
                }
            };
            // Not raced against `stop`: an answered request is recorded.
            let result = self.shared.gateway.notify(url, &body).await;
            drop(permit);
            match result {
                Ok(rejected) => {
                    if rejected.contains(&pusher.pushkey) {
                        metrics::counter!("myelin_push_pushkeys_rejected_total").increment(1);
                        return Step::End(End::Rejected);
                    }
                    metrics::counter!("myelin_push_notifications_sent_total").increment(1);
                    self.failing_since = None;
                    return Step::Delivered;
                }
                Err(e) => {
                    metrics::counter!("myelin_push_requests_failed_total").increment(1);
                    let now = now_ms();
                    match self.failing_since {
                        None => {
                            tracing::warn!(error = %e, user_id = %self.key.user_id, app_id = %self.key.app_id, "push gateway request failed; retrying");
                            self.failing_since = Some(now);
                            if let Err(end) = self.record(self.delivered).await {
                                return Step::End(end);
                            }
                        }
                        Some(since) if now.saturating_sub(since) >= give_up_ms => {
                            tracing::warn!(error = %e, user_id = %self.key.user_id, app_id = %self.key.app_id, event_id = %n.event_id, "push gateway failing for too long; skipping the notification");
                            metrics::counter!("myelin_push_notifications_skipped_total", "reason" => "gave_up").increment(1);
                            return Step::Skipped;
                        }
                        Some(_) => {
                            tracing::debug!(error = %e, user_id = %self.key.user_id, ?delay, "push gateway request failed again");
                        }
                    }
                    if !self.pause(delay).await {
                        return Step::End(End::Stopped);
                    }
                    delay = (delay * 2).min(max_delay);
                }
            }
        }
    }

    /// The event, its room's name and alias, the sender's display name and
    /// the user's badge; `None` if the event is gone.
    async fn details(
        &self,
        pusher: &Pusher,
        n: &Notification,
    ) -> StorageResult<Option<EventDetails>> {
        let storage = &self.shared.storage;
        let Some(stored) = storage.event(&n.event_id).await? else {
            return Ok(None);
        };
        let event = if stored.redacted_by.is_some() {
            None
        } else {
            serde_json::from_str::<Value>(&stored.json).ok()
        };
        let mut details = EventDetails {
            event,
            unread: storage.unread_notification_total(&pusher.user_id).await?,
            ..EventDetails::default()
        };
        if payload::is_event_id_only(pusher) {
            return Ok(Some(details));
        }
        details.room_name = self
            .state_string(n.room_nid, "m.room.name", "", "name")
            .await?;
        details.room_alias = self
            .state_string(n.room_nid, "m.room.canonical_alias", "", "alias")
            .await?;
        if !stored.sender.is_empty() {
            details.sender_display_name = self
                .state_string(n.room_nid, "m.room.member", &stored.sender, "displayname")
                .await?;
        }
        Ok(Some(details))
    }

    /// A string field of a current state event's content.
    async fn state_string(
        &self,
        room_nid: i64,
        kind: &str,
        state_key: &str,
        field: &str,
    ) -> StorageResult<Option<String>> {
        let event = self
            .shared
            .storage
            .current_state_event(room_nid, kind, state_key)
            .await?;
        Ok(event
            .filter(|e| e.redacted_by.is_none())
            .and_then(|e| serde_json::from_str::<Value>(&e.json).ok())
            .and_then(|v| {
                v.get("content")
                    .and_then(|c| c.get(field))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }))
    }

    /// The pusher as stored; `None` if it is gone or the task was stopped.
    async fn load(&mut self) -> Option<Pusher> {
        loop {
            if self.stopped() {
                return None;
            }
            match self.shared.storage.pushers(&self.key.user_id).await {
                Ok(pushers) => {
                    return pushers
                        .into_iter()
                        .find(|p| p.app_id == self.key.app_id && p.pushkey == self.key.pushkey);
                }
                Err(e) => {
                    tracing::warn!(error = %e, user_id = %self.key.user_id, "cannot load a pusher");
                    if !self.pause(self.initial_delay()).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Stores the progress; `Err(Gone)` if the pusher was deleted meanwhile.
    /// A failed write is logged and delivery goes on: the position is
    /// written again with the next notification.
    async fn record(&mut self, last_stream_pos: i64) -> Result<(), End> {
        let k = self.key;
        match self
            .shared
            .storage
            .set_pusher_progress(
                &k.user_id,
                &k.app_id,
                &k.pushkey,
                last_stream_pos,
                self.failing_since,
            )
            .await
        {
            Ok(true) => {
                self.delivered = last_stream_pos;
                Ok(())
            }
            Ok(false) => Err(End::Gone),
            Err(e) => {
                tracing::warn!(error = %e, user_id = %k.user_id, "cannot record a pusher's progress");
                Ok(())
            }
        }
    }

    /// The gateway rejected the pushkey: the spec has the pusher removed.
    async fn reject(&self) {
        let k = self.key;
        tracing::info!(user_id = %k.user_id, app_id = %k.app_id, "push gateway rejected the pushkey; deleting the pusher");
        if let Err(e) = self
            .shared
            .storage
            .delete_pusher(&k.user_id, &k.app_id, &k.pushkey)
            .await
        {
            tracing::warn!(error = %e, user_id = %k.user_id, "cannot delete a rejected pusher");
        }
    }

    fn initial_delay(&self) -> Duration {
        Duration::from_millis(self.shared.config.retry_initial_ms)
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps for `delay`; `false` if told to stop meanwhile.
    async fn pause(&self, delay: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => !self.stopped(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }
}
