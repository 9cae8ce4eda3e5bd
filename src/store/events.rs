//! The durable, ordered event log.

use rusqlite::{params, OptionalExtension};

use super::{now_usec, to_i64, EventRecord, NewEvent, Store, StoreError};

impl Store {
    /// Appends an event and returns its sequence number. Numbers only grow,
    /// across restarts and pruning.
    pub fn append_event(&self, ev: &NewEvent) -> Result<u64, StoreError> {
        let data = ev.data.to_string();
        self.write(|tx| {
            Ok(tx.query_row(
                "INSERT INTO events (usec, kind, severity, service, summary, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 RETURNING seq",
                params![
                    now_usec(),
                    ev.kind,
                    ev.severity,
                    ev.service,
                    ev.summary,
                    data
                ],
                |row| row.get(0),
            )?)
        })
    }

    /// Up to `limit` events with a sequence number above `seq`, oldest first.
    pub fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, usec, kind, severity, service, summary, data FROM events
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![to_i64(seq), to_i64(limit)], |row| {
                Ok((
                    EventRecord {
                        seq: row.get(0)?,
                        usec: row.get(1)?,
                        kind: row.get(2)?,
                        severity: row.get(3)?,
                        service: row.get(4)?,
                        summary: row.get(5)?,
                        data: serde_json::Value::Null,
                    },
                    row.get::<_, String>(6)?,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter()
            .map(|(mut event, data)| {
                event.data = serde_json::from_str(&data).map_err(|e| {
                    self.corrupt(format_args!("events.data of event {}: {e}", event.seq))
                })?;
                Ok(event)
            })
            .collect()
    }

    /// The highest sequence number ever handed out (0 before the first
    /// event). Pruning every event does not lower it.
    pub fn last_event_seq(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            // sqlite_sequence holds AUTOINCREMENT's high-water mark; it has
            // no row for `events` until the first insert.
            Ok(conn
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
                    [],
                    |row| row.get(0),
                )
                .optional()?
                .unwrap_or(0))
        })
    }

    /// Keeps the newest `keep` events and deletes the rest. Returns how
    /// many were deleted.
    pub fn prune_events(&self, keep: usize) -> Result<usize, StoreError> {
        self.prune_keeping(
            "DELETE FROM events WHERE seq NOT IN (
                 SELECT seq FROM events ORDER BY seq DESC LIMIT ?1)",
            keep,
            "events",
        )
    }
}
