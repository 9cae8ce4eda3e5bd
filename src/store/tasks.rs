//! Tasks and their logs.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::{
    now_usec, to_i64, LogLine, NewTask, Origin, Store, StoreError, TaskFilter, TaskRecord,
    TaskResult, TaskState,
};

const TASK_COLUMNS: &str = "id, kind, service, origin, state, result, error, \
                            created_usec, started_usec, finished_usec";

/// A task row before its state is parsed.
struct RawTask {
    id: u64,
    kind: String,
    service: String,
    origin: String,
    state: String,
    result: String,
    error: Option<String>,
    created_usec: u64,
    started_usec: Option<u64>,
    finished_usec: Option<u64>,
}

impl RawTask {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawTask> {
        Ok(RawTask {
            id: row.get(0)?,
            kind: row.get(1)?,
            service: row.get(2)?,
            origin: row.get(3)?,
            state: row.get(4)?,
            result: row.get(5)?,
            error: row.get(6)?,
            created_usec: row.get(7)?,
            started_usec: row.get(8)?,
            finished_usec: row.get(9)?,
        })
    }
}

/// SQL list of the finished states, for `state IN (...)`.
const FINISHED_STATES: &str = "('succeeded', 'failed', 'cancelled')";

fn load(conn: &Connection, id: u64) -> rusqlite::Result<Option<RawTask>> {
    conn.query_row(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
        [id],
        RawTask::from_row,
    )
    .optional()
}

/// Appends one log line to task `id`, numbered after the last one.
fn append_log(conn: &Connection, id: u64, line: &str, usec: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO task_log (task_id, line_no, usec, line)
         VALUES (?1, (SELECT COALESCE(MAX(line_no), 0) + 1 FROM task_log WHERE task_id = ?1),
                 ?2, ?3)",
        params![id, usec, line],
    )?;
    Ok(())
}

impl Store {
    fn task_from_raw(&self, raw: RawTask) -> Result<TaskRecord, StoreError> {
        let state = self.parse_enum(&raw.state, "tasks.state", format_args!("task {}", raw.id))?;
        Ok(TaskRecord {
            id: raw.id,
            kind: raw.kind,
            service: raw.service,
            origin: Origin::parse(&raw.origin),
            state,
            result: raw.result,
            error: raw.error,
            created_usec: raw.created_usec,
            started_usec: raw.started_usec,
            finished_usec: raw.finished_usec,
        })
    }

    /// Loads task `id` inside a write, failing if there is none.
    fn existing_task(&self, conn: &Connection, id: u64) -> Result<TaskRecord, StoreError> {
        let raw = load(conn, id)?.ok_or(StoreError::NoSuchTask(id))?;
        self.task_from_raw(raw)
    }

    /// Records a new pending task. Ids only grow and are never reused,
    /// even after pruning.
    pub fn create_task(&self, new: &NewTask) -> Result<TaskRecord, StoreError> {
        self.write(|tx| {
            let id: u64 = tx.query_row(
                "INSERT INTO tasks (kind, service, origin, state, created_usec)
                 VALUES (?1, ?2, ?3, 'pending', ?4)
                 RETURNING id",
                params![new.kind, new.service, new.origin.to_string(), now_usec()],
                |row| row.get(0),
            )?;
            self.existing_task(tx, id)
        })
    }

    /// Marks a pending task running. Starting a task that is already
    /// running changes nothing; a finished one is [`StoreError::TaskFinished`].
    pub fn start_task(&self, id: u64) -> Result<(), StoreError> {
        self.write(|tx| {
            let task = self.existing_task(tx, id)?;
            match task.state {
                TaskState::Pending => {
                    tx.execute(
                        "UPDATE tasks SET state = 'running', started_usec = ?2 WHERE id = ?1",
                        params![id, now_usec()],
                    )?;
                    Ok(())
                }
                TaskState::Running => Ok(()),
                _ => Err(StoreError::TaskFinished(id)),
            }
        })
    }

    /// Finishes a pending or running task as `state` (succeeded, failed or
    /// cancelled) with a `result` named as in [`result`].
    pub fn finish_task(
        &self,
        id: u64,
        state: TaskState,
        result: TaskResult,
        error: Option<&str>,
    ) -> Result<TaskRecord, StoreError> {
        if !state.is_finished() {
            return Err(StoreError::NotFinalState { id, state });
        }
        self.write(|tx| {
            let task = self.existing_task(tx, id)?;
            if task.state.is_finished() {
                return Err(StoreError::TaskFinished(id));
            }
            tx.execute(
                "UPDATE tasks SET state = ?2, result = ?3, error = ?4, finished_usec = ?5
                 WHERE id = ?1",
                params![id, state.as_str(), result.as_str(), error, now_usec()],
            )?;
            self.existing_task(tx, id)
        })
    }

    /// Appends a line to a task's log; lines are numbered from 1. A
    /// finished task still takes lines (output that trails its end).
    ///
    /// Commits with `synchronous=NORMAL` (see the module documentation).
    pub fn append_task_log(&self, id: u64, line: &str) -> Result<(), StoreError> {
        // One lock for all three steps, so no other write slips in while
        // the connection is at NORMAL.
        let mut conn = self.conn();
        let written = conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(StoreError::from)
            .and_then(|()| {
                Self::write_on(&mut conn, |tx| {
                    if load(tx, id)?.is_none() {
                        return Err(StoreError::NoSuchTask(id));
                    }
                    append_log(tx, id, line, now_usec())?;
                    Ok(())
                })
            });
        let restored = conn.pragma_update(None, "synchronous", "FULL");
        drop(conn);
        let result = written
            .and(restored.map_err(StoreError::from))
            .map_err(|e| self.locate(e));
        self.account(&result);
        result
    }

    /// Task `id`, if it exists.
    pub fn task(&self, id: u64) -> Result<Option<TaskRecord>, StoreError> {
        // SQLite's integers are i64: an id past i64::MAX names no task
        // (rather than an error converting it).
        if i64::try_from(id).is_err() {
            return Ok(None);
        }
        let raw = self.read(|conn| Ok(load(conn, id)?))?;
        raw.map(|raw| self.task_from_raw(raw)).transpose()
    }

    /// The whole log of task `id`, oldest first. Empty for an unknown task.
    pub fn task_log(&self, id: u64) -> Result<Vec<LogLine>, StoreError> {
        Ok(self
            .task_log_since(id, 0)?
            .into_iter()
            .map(|(_, line)| line)
            .collect())
    }

    /// The log lines of task `id` numbered after `after_line`, with their
    /// numbers, oldest first. Pass the last number seen to follow a log.
    pub fn task_log_since(
        &self,
        id: u64,
        after_line: u64,
    ) -> Result<Vec<(u64, LogLine)>, StoreError> {
        if i64::try_from(id).is_err() {
            return Ok(Vec::new());
        }
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT line_no, usec, line FROM task_log
                 WHERE task_id = ?1 AND line_no > ?2 ORDER BY line_no",
            )?;
            let rows = stmt.query_map(params![id, to_i64(after_line)], |row| {
                Ok((
                    row.get(0)?,
                    LogLine {
                        usec: row.get(1)?,
                        line: row.get(2)?,
                    },
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Tasks matching `filter`, newest first.
    pub fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(service) = &filter.service {
            args.push(Value::Text(service.clone()));
            sql.push_str(&format!(" AND service = ?{}", args.len()));
        }
        if !filter.states.is_empty() {
            let mut marks = Vec::with_capacity(filter.states.len());
            for state in &filter.states {
                args.push(Value::Text(state.as_str().to_owned()));
                marks.push(format!("?{}", args.len()));
            }
            sql.push_str(&format!(" AND state IN ({})", marks.join(", ")));
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(limit) = filter.limit {
            args.push(Value::Integer(to_i64(limit)));
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
        }
        let raws = self.read(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), RawTask::from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        raws.into_iter()
            .map(|raw| self.task_from_raw(raw))
            .collect()
    }

    /// How many stored tasks are in each state (states with none left out).
    pub fn count_tasks_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT state, COUNT(*) FROM tasks GROUP BY state ORDER BY state",
            )?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Finished tasks by result (the empty result of an unfinished task is
    /// not counted), in result order.
    pub fn count_tasks_by_result(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT result, COUNT(*) FROM tasks WHERE result != ''
                 GROUP BY result ORDER BY result",
            )?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Marks every pending or running task failed with result
    /// "interrupted", appends a log line saying so, and returns them
    /// (oldest first). Call once at start-up, before the task queue runs.
    pub fn interrupt_unfinished(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let interrupted = self.write(|tx| {
            let raws = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks
                     WHERE state IN ('pending', 'running') ORDER BY id"
                ))?;
                let rows = stmt.query_map([], RawTask::from_row)?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let now = now_usec();
            let mut done = Vec::with_capacity(raws.len());
            for raw in raws {
                let task = self.task_from_raw(raw)?;
                let message = format!("stackd stopped while the task was {}", task.state.as_str());
                tx.execute(
                    "UPDATE tasks SET state = 'failed', result = ?2, error = ?3, finished_usec = ?4
                     WHERE id = ?1",
                    params![task.id, TaskResult::Interrupted.as_str(), message, now],
                )?;
                append_log(
                    tx,
                    task.id,
                    &format!("{message}; marked failed (interrupted)"),
                    now,
                )?;
                done.push(self.existing_task(tx, task.id)?);
            }
            Ok(done)
        })?;
        for task in &interrupted {
            tracing::warn!(
                task = task.id,
                kind = %task.kind,
                service = %task.service,
                "{}",
                task.error.as_deref().unwrap_or_default()
            );
        }
        Ok(interrupted)
    }

    /// Keeps the newest `keep` finished tasks and deletes older finished
    /// ones with their logs. Unfinished tasks are never deleted. Returns
    /// how many tasks were deleted.
    pub fn prune_tasks(&self, keep: usize) -> Result<usize, StoreError> {
        self.prune_keeping(
            &format!(
                "DELETE FROM tasks WHERE state IN {FINISHED_STATES} AND id NOT IN (
                     SELECT id FROM tasks WHERE state IN {FINISHED_STATES}
                     ORDER BY id DESC LIMIT ?1)"
            ),
            keep,
            "finished tasks",
        )
    }
}
