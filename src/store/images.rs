//! The images each service ran (schema version 5): what `prune` keeps and
//! what `rollback` goes back to.

use rusqlite::{params, OptionalExtension};

use super::{now_usec, Store, StoreError};

/// One image reference of a service (`image:` in its Compose file, or the
/// name Compose gave a built image): the image id it runs now and the one
/// it ran before the last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceImage {
    pub service: String,
    pub reference: String,
    pub current: String,
    pub previous: Option<String>,
}

/// An image id stackd saw a service it deploys run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenImage {
    pub image_id: String,
    pub service: String,
    pub reference: String,
}

impl Store {
    /// Records that `service` runs `image_id` for `reference`. When that
    /// differs from the id recorded as current, the old current becomes the
    /// previous one (what a rollback goes back to). Returns whether it
    /// changed.
    pub fn record_image(
        &self,
        service: &str,
        reference: &str,
        image_id: &str,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let now = now_usec();
            tx.execute(
                "INSERT INTO image_history (image_id, service, reference, last_usec)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (image_id, service, reference) DO UPDATE SET last_usec = ?4",
                params![image_id, service, reference, now],
            )?;
            let current: Option<String> = tx
                .query_row(
                    "SELECT current FROM service_images WHERE service = ?1 AND reference = ?2",
                    params![service, reference],
                    |row| row.get(0),
                )
                .optional()?;
            match current {
                Some(c) if c == image_id => Ok(false),
                Some(c) => {
                    tx.execute(
                        "UPDATE service_images SET previous = ?3, current = ?4, changed_usec = ?5
                         WHERE service = ?1 AND reference = ?2",
                        params![service, reference, c, image_id, now],
                    )?;
                    Ok(true)
                }
                None => {
                    tx.execute(
                        "INSERT INTO service_images (service, reference, current, previous, changed_usec)
                         VALUES (?1, ?2, ?3, NULL, ?4)",
                        params![service, reference, image_id, now],
                    )?;
                    Ok(true)
                }
            }
        })
    }

    /// Every service's images (all services when `service` is `None`).
    pub fn service_images(&self, service: Option<&str>) -> Result<Vec<ServiceImage>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT service, reference, current, previous FROM service_images
                 WHERE ?1 IS NULL OR service = ?1 ORDER BY service, reference",
            )?;
            let rows = stmt.query_map([service], |row| {
                Ok(ServiceImage {
                    service: row.get(0)?,
                    reference: row.get(1)?,
                    current: row.get(2)?,
                    previous: row.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Every image id a service stackd deployed was seen running.
    pub fn seen_images(&self) -> Result<Vec<SeenImage>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT image_id, service, reference FROM image_history
                 ORDER BY image_id, service, reference",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok(SeenImage {
                    image_id: row.get(0)?,
                    service: row.get(1)?,
                    reference: row.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Forgets an image that is gone (removed by prune, or by anyone).
    pub fn forget_image(&self, image_id: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM image_history WHERE image_id = ?1", [image_id])?;
            tx.execute(
                "UPDATE service_images SET previous = NULL WHERE previous = ?1",
                [image_id],
            )?;
            Ok(())
        })
    }
}
