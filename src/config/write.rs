//! Replacing the cluster file with a pushed one: checked as a reload would
//! check it, then written so that a crash leaves the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{dropin_files, parse_sources, read, Config, ConfigError, LoadOptions};

/// What a reload would make of `text` as the main file at `path`, merged
/// with the drop-ins beside it. Diagnostics name `path`.
pub fn check_replacement(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
) -> Result<Config, ConfigError> {
    let mut sources = vec![(path.to_path_buf(), text.to_owned())];
    for dropin in dropin_files(path)? {
        let text = read(&dropin)?;
        sources.push((dropin, text));
    }
    parse_sources(&sources, opts, true)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory (the mode of the file it replaces, else 0644), fsync, rename
/// over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "config".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mode = fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        // The umask may have narrowed `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stackd.toml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "a temporary file was left behind");
    }

    #[test]
    fn check_replacement_names_the_target_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stackd.toml");
        let e = check_replacement(&path, "host = \"a\"\nbogus = 1\n", &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("{}:2:1:", path.display())), "{e}");
    }
}
