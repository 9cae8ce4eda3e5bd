//! Reloading the config: from its file (`reload`) or a new text
//! (`replace_config`), guarded against removals unless forced.

use std::sync::Arc;

use tracing::{info, warn};

use super::{Control, ControlError};
use crate::config;
use crate::events::{Event, Severity};
use crate::systemd;

impl Control {
    /// Re-read the config. A bad file changes nothing and says why; so
    /// does one that would remove too many of this host's services
    /// (`reload_guard`), unless `force`.
    pub fn reload(&self, force: bool) -> Result<(), ControlError> {
        systemd::reloading();
        let path = self.config().path.clone();
        let result = config::load(&path, &self.shared.load_options).map_err(|e| e.to_string());
        let result = result.and_then(|new| match self.config().guard(&new) {
            Some(why) if !force => Err(format!(
                "{}: {why}; check the file, or run `stackctl reload --force` to remove them",
                path.display()
            )),
            _ => Ok(new),
        });
        let outcome = match result {
            Ok(new) => {
                let old = self.config();
                let removed = old.removed_by(&new);
                if !removed.is_empty() {
                    info!(
                        "the reload removes {} of this host's services: {}",
                        removed.len(),
                        removed.join(", ")
                    );
                }
                if new.max_parallel != old.max_parallel {
                    warn!("max_parallel changed; the new value takes effect when stackd restarts");
                }
                info!(
                    "configuration reloaded from {} ({})",
                    path.display(),
                    new.hash
                );
                *self
                    .shared
                    .config
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
                let _ = self.shared.events.send(Event::ServicesReloaded);
                let _ = self.shared.events.send(Event::ManagerChanged);
                Ok(())
            }
            Err(e) => {
                self.alert(
                    Severity::Critical,
                    "reload-failed",
                    "",
                    "reload refused, the running configuration stays in force",
                    &e,
                );
                Err(ControlError::InvalidConfig(e))
            }
        };
        systemd::ready(&self.status_line());
        outcome
    }

    /// Replaces the cluster file with `text` (a push from a peer): checked
    /// as a reload checks the file on disk, and only then written
    /// atomically and reloaded. With `check_only` nothing is written.
    /// Returns the hash of the configuration in force afterwards.
    /// An empty text is refused (a truncated file, almost certainly), and
    /// so, unless `force`, is one that trips `reload_guard`.
    pub fn replace_config(
        &self,
        text: &str,
        check_only: bool,
        force: bool,
    ) -> Result<String, ControlError> {
        if text.trim().is_empty() {
            return Err(ControlError::InvalidArgument(
                "the pushed cluster file is empty (a truncated file?); nothing was written".into(),
            ));
        }
        // One push at a time: the check and the write go together.
        static PUSH: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = PUSH.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.config().path.clone();
        let new = config::check_replacement(&path, text, &self.shared.load_options)
            .map_err(|e| ControlError::InvalidConfig(e.to_string()))?;
        if !force {
            if let Some(why) = self.config().guard(&new) {
                return Err(ControlError::Conflict(format!(
                    "the pushed cluster file was refused: {why}; nothing was written \
                     (push it with `stackctl config push --force` to remove them)"
                )));
            }
        }
        if check_only {
            return Ok(new.hash);
        }
        config::write_atomic(&path, text.as_bytes())
            .map_err(|e| ControlError::Io(format!("cannot write {}: {e}", path.display())))?;
        info!(
            "cluster file {} replaced by a push ({})",
            path.display(),
            new.hash
        );
        // Checked above, with the same drop-ins; forced so that a drop-in
        // changed in between does not leave the new file written but
        // refused.
        self.reload(true)?;
        Ok(self.config().hash.clone())
    }
}
