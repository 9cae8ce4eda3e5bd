//! The notification outbox: notifications survive restarts until a channel
//! delivered them. An item may also be *held* (the router's rate limit kept
//! it back): it is never due, and [`Store::outbox_summarise`] later replaces
//! the held items of a channel by one summary item, in one transaction.

use rusqlite::{params, OptionalExtension};

use super::{now_usec, to_i64, OutboxItem, Store, StoreError};

impl Store {
    /// Queues `payload` for `channel`, due at once. The pair
    /// (`channel`, `dedup_key`) is pushed at most once: pushing it again
    /// (say, after a restart replayed the event) returns the first item's
    /// id and changes nothing, delivered or not.
    pub fn outbox_push(
        &self,
        channel: &str,
        dedup_key: &str,
        payload: &serde_json::Value,
    ) -> Result<u64, StoreError> {
        self.outbox_insert(channel, dedup_key, payload, false)
    }

    /// Keeps `payload` for `channel` as held back: never due, waiting for
    /// [`Store::outbox_summarise`]. Pushed at most once per (`channel`,
    /// `dedup_key`), as [`Store::outbox_push`].
    pub fn outbox_hold(
        &self,
        channel: &str,
        dedup_key: &str,
        payload: &serde_json::Value,
    ) -> Result<u64, StoreError> {
        self.outbox_insert(channel, dedup_key, payload, true)
    }

    fn outbox_insert(
        &self,
        channel: &str,
        dedup_key: &str,
        payload: &serde_json::Value,
        held: bool,
    ) -> Result<u64, StoreError> {
        let payload = payload.to_string();
        self.write(|tx| {
            let existing: Option<u64> = tx
                .query_row(
                    "SELECT id FROM outbox WHERE channel = ?1 AND dedup_key = ?2",
                    [channel, dedup_key],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                return Ok(id);
            }
            let now = now_usec();
            Ok(tx.query_row(
                "INSERT INTO outbox (channel, dedup_key, payload, created_usec, next_attempt_usec, held)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)
                 RETURNING id",
                params![channel, dedup_key, payload, now, held],
                |row| row.get(0),
            )?)
        })
    }

    /// Up to `limit` undelivered items due at `now_usec`, the longest due first.
    pub fn outbox_due(&self, now_usec: u64, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.outbox_select(
            "delivered_usec IS NULL AND held = 0 AND next_attempt_usec <= ?1
             ORDER BY next_attempt_usec, id LIMIT ?2",
            params![to_i64(now_usec), to_i64(limit)],
        )
    }

    /// The held items of `channel` (every channel when `None`), oldest
    /// first, at most `limit`.
    pub fn outbox_held(
        &self,
        channel: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.outbox_select(
            "delivered_usec IS NULL AND held = 1 AND (?1 IS NULL OR channel = ?1)
             ORDER BY id LIMIT ?2",
            params![channel, to_i64(limit)],
        )
    }

    /// Outbox items matching `condition` (a WHERE clause with its ORDER BY
    /// and LIMIT), payloads decoded.
    fn outbox_select(
        &self,
        condition: &str,
        values: impl rusqlite::Params,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT id, channel, dedup_key, payload, created_usec, attempts,
                        next_attempt_usec, last_error
                 FROM outbox WHERE {condition}"
            ))?;
            let rows = stmt.query_map(values, |row| {
                Ok((
                    OutboxItem {
                        id: row.get(0)?,
                        channel: row.get(1)?,
                        dedup_key: row.get(2)?,
                        payload: serde_json::Value::Null,
                        created_usec: row.get(4)?,
                        attempts: row.get(5)?,
                        next_attempt_usec: row.get(6)?,
                        last_error: row.get(7)?,
                    },
                    row.get::<_, String>(3)?,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter()
            .map(|(mut item, payload)| {
                item.payload = serde_json::from_str(&payload).map_err(|e| {
                    self.corrupt(format_args!("outbox.payload of item {}: {e}", item.id))
                })?;
                Ok(item)
            })
            .collect()
    }

    /// Replaces the held items `held` (of one channel) by one item for
    /// `channel` with `payload`, due at once: the summary is queued and the
    /// held items are marked delivered (summarised), in one transaction.
    /// Returns the summary's id.
    pub fn outbox_summarise(
        &self,
        channel: &str,
        dedup_key: &str,
        payload: &serde_json::Value,
        held: &[u64],
    ) -> Result<u64, StoreError> {
        let payload = payload.to_string();
        self.write(|tx| {
            let now = now_usec();
            let id: u64 = match tx
                .query_row(
                    "SELECT id FROM outbox WHERE channel = ?1 AND dedup_key = ?2",
                    [channel, dedup_key],
                    |row| row.get(0),
                )
                .optional()?
            {
                Some(id) => id,
                None => tx.query_row(
                    "INSERT INTO outbox (channel, dedup_key, payload, created_usec, next_attempt_usec)
                     VALUES (?1, ?2, ?3, ?4, ?4)
                     RETURNING id",
                    params![channel, dedup_key, payload, now],
                    |row| row.get(0),
                )?,
            };
            let mut stmt = tx.prepare_cached(
                "UPDATE outbox SET delivered_usec = ?2, last_error = ?3
                 WHERE id = ?1 AND held = 1 AND delivered_usec IS NULL",
            )?;
            let note = format!("summarised in outbox item {id}");
            for h in held {
                stmt.execute(params![h, now, note])?;
            }
            Ok(id)
        })
    }

    /// Marks item `id` delivered; it is never due again. Marking it twice
    /// keeps the first time.
    pub fn outbox_delivered(&self, id: u64) -> Result<(), StoreError> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE outbox SET delivered_usec = COALESCE(delivered_usec, ?2) WHERE id = ?1",
                params![id, now_usec()],
            )?;
            if changed == 0 {
                return Err(StoreError::NoSuchOutboxItem(id));
            }
            Ok(())
        })
    }

    /// Records a failed delivery of item `id`: one more attempt, `error`
    /// kept, due again at `next_attempt_usec`.
    pub fn outbox_retry(
        &self,
        id: u64,
        next_attempt_usec: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE outbox
                 SET attempts = attempts + 1, next_attempt_usec = ?2, last_error = ?3
                 WHERE id = ?1",
                params![id, to_i64(next_attempt_usec), error],
            )?;
            if changed == 0 {
                return Err(StoreError::NoSuchOutboxItem(id));
            }
            Ok(())
        })
    }

    /// Deletes delivered items but the newest `keep` (their dedup keys go
    /// with them). Undelivered items are never deleted. Returns how many
    /// were deleted.
    pub fn outbox_prune(&self, keep: usize) -> Result<usize, StoreError> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM outbox WHERE delivered_usec IS NOT NULL AND id NOT IN (
                     SELECT id FROM outbox WHERE delivered_usec IS NOT NULL
                     ORDER BY id DESC LIMIT ?1)",
                [to_i64(keep)],
            )?)
        })
    }
}
