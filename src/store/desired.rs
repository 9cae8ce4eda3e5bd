//! Desired state, the projects stackd deployed, and small metadata.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, OptionalExtension};

use super::{now_usec, Desired, DesiredSource, DesiredState, Store, StoreError};

impl Store {
    /// The stored desired state of `service`, if any.
    pub fn desired(&self, service: &str) -> Result<Option<Desired>, StoreError> {
        let row = self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT state, source, since_usec, peer, detail FROM desired WHERE service = ?1",
                    [service],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, u64>(2)?,
                            row.get::<_, Option<String>>(3)?,
                            row.get::<_, Option<String>>(4)?,
                        ))
                    },
                )
                .optional()?)
        })?;
        row.map(|(state, source, since, peer, detail)| {
            self.desired_from_row(service, &state, &source, since, peer, detail)
        })
        .transpose()
    }

    /// Every stored desired state, by service.
    pub fn all_desired(&self) -> Result<BTreeMap<String, Desired>, StoreError> {
        let rows = self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT service, state, source, since_usec, peer, detail FROM desired")?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, u64>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<String>>(5)?,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter()
            .map(|(service, state, source, since, peer, detail)| {
                let desired =
                    self.desired_from_row(&service, &state, &source, since, peer, detail)?;
                Ok((service, desired))
            })
            .collect()
    }

    fn desired_from_row(
        &self,
        service: &str,
        state: &str,
        source: &str,
        since_usec: u64,
        peer: Option<String>,
        detail: Option<String>,
    ) -> Result<Desired, StoreError> {
        let row = format!("service {service:?}");
        Ok(Desired {
            state: self.parse_enum(state, "desired.state", &row)?,
            source: self.parse_enum(source, "desired.source", &row)?,
            since_usec,
            peer,
            detail,
        })
    }

    /// Records what `service` should be. `since_usec` moves only when the
    /// state changes, so a config reload that says "running" again keeps
    /// the time the service was first wanted running.
    pub fn set_desired(
        &self,
        service: &str,
        state: DesiredState,
        source: DesiredSource,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO desired (service, state, source, since_usec)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (service) DO UPDATE SET
                     since_usec = CASE WHEN state = excluded.state
                                       THEN since_usec ELSE excluded.since_usec END,
                     state = excluded.state,
                     source = excluded.source,
                     detail = NULL",
                params![service, state.as_str(), source.as_str(), now_usec()],
            )?;
            Ok(())
        })
    }

    /// Records that a person stopped `service` through Docker itself, not
    /// through stackd; `door` says how ("docker stop", "docker kill").
    pub fn set_stopped_outside(&self, service: &str, door: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO desired (service, state, source, since_usec, detail)
                 VALUES (?1, 'stopped', 'outside', ?2, ?3)
                 ON CONFLICT (service) DO UPDATE SET
                     since_usec = CASE WHEN state = 'stopped'
                                       THEN since_usec ELSE excluded.since_usec END,
                     state = 'stopped',
                     source = 'outside',
                     detail = excluded.detail",
                params![service, now_usec(), door],
            )?;
            Ok(())
        })
    }

    /// Records a move: `state` with source `migrate`, and `peer` as the
    /// other host (the one moved to when stopped, from when running).
    pub fn set_moved(
        &self,
        service: &str,
        state: DesiredState,
        peer: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO desired (service, state, source, since_usec, peer)
                 VALUES (?1, ?2, 'migrate', ?3, ?4)
                 ON CONFLICT (service) DO UPDATE SET
                     since_usec = CASE WHEN state = excluded.state
                                       THEN since_usec ELSE excluded.since_usec END,
                     state = excluded.state,
                     source = excluded.source,
                     peer = excluded.peer,
                     detail = NULL",
                params![service, state.as_str(), now_usec(), peer],
            )?;
            Ok(())
        })
    }

    /// Records a move whose outcome this host could not learn: stopped
    /// here, handed to `peer`, which stopped answering before it said
    /// whether it started the service. Like [`set_moved`](Self::set_moved)
    /// with `detail` = [`IN_DOUBT`](super::IN_DOUBT); settling it (the
    /// next `set_moved` or `set_desired`) clears the mark.
    pub fn set_move_in_doubt(&self, service: &str, peer: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO desired (service, state, source, since_usec, peer, detail)
                 VALUES (?1, 'stopped', 'migrate', ?2, ?3, ?4)
                 ON CONFLICT (service) DO UPDATE SET
                     since_usec = CASE WHEN state = 'stopped'
                                       THEN since_usec ELSE excluded.since_usec END,
                     state = 'stopped',
                     source = 'migrate',
                     peer = excluded.peer,
                     detail = excluded.detail",
                params![service, now_usec(), peer, super::IN_DOUBT],
            )?;
            Ok(())
        })
    }

    /// Records a service kept running here after a move to `peer` that
    /// the cluster file's placement asked for failed before `peer` started
    /// it: running, source `migrate`, `peer`, `detail` =
    /// [`KEPT`](super::KEPT). This host manages it by that record (its
    /// data is here) until a move or a person says otherwise.
    pub fn set_kept(&self, service: &str, peer: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO desired (service, state, source, since_usec, peer, detail)
                 VALUES (?1, 'running', 'migrate', ?2, ?3, ?4)
                 ON CONFLICT (service) DO UPDATE SET
                     since_usec = excluded.since_usec,
                     state = 'running',
                     source = 'migrate',
                     peer = excluded.peer,
                     detail = excluded.detail",
                params![service, now_usec(), peer, super::KEPT],
            )?;
            Ok(())
        })
    }

    /// Puts back a desired state read earlier (`None`: none was stored),
    /// as it was, time and peer included.
    pub fn restore_desired(
        &self,
        service: &str,
        desired: Option<&Desired>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM desired WHERE service = ?1", [service])?;
            if let Some(d) = desired {
                tx.execute(
                    "INSERT INTO desired (service, state, source, since_usec, peer, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        service,
                        d.state.as_str(),
                        d.source.as_str(),
                        super::to_i64(d.since_usec),
                        d.peer,
                        d.detail
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Drops the stored desired state of `service` (no-op if there is none).
    pub fn forget_desired(&self, service: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM desired WHERE service = ?1", [service])?;
            Ok(())
        })
    }

    /// Records that stackd deployed `service` (no-op if already recorded).
    pub fn mark_deployed(&self, service: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO deployed (service, since_usec) VALUES (?1, ?2)
                 ON CONFLICT (service) DO NOTHING",
                params![service, now_usec()],
            )?;
            Ok(())
        })
    }

    /// Forgets that stackd deployed `service` (no-op if not recorded).
    pub fn unmark_deployed(&self, service: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM deployed WHERE service = ?1", [service])?;
            Ok(())
        })
    }

    /// The projects stackd deployed and may therefore stop.
    pub fn deployed(&self) -> Result<BTreeSet<String>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT service FROM deployed")?;
            let rows = stmt.query_map([], |row| row.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// A metadata value (last boot id, ...).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                    row.get(0)
                })
                .optional()?)
        })
    }

    /// Sets a metadata value, replacing any earlier one.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )?;
            Ok(())
        })
    }
}
