//! Object paths, escaped as systemd escapes unit names: every byte outside
//! `[A-Za-z0-9]` becomes `_xx` (lower-case hex); an empty name becomes `_`.

use zbus::zvariant::OwnedObjectPath;

pub const MANAGER_PATH: &str = "/org/stackd1";
const SERVICE_PREFIX: &str = "/org/stackd1/service/";
const TASK_PREFIX: &str = "/org/stackd1/task/";

pub fn escape(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

pub fn unescape(label: &str) -> Option<String> {
    if label == "_" {
        return Some(String::new());
    }
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = label.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub fn service_path(name: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(format!("{SERVICE_PREFIX}{}", escape(name)))
        .expect("escaped names are valid path elements")
}

pub fn task_path(id: u64) -> OwnedObjectPath {
    OwnedObjectPath::try_from(format!("{TASK_PREFIX}{id}"))
        .expect("a number is a valid path element")
}

/// The task id in a task object path.
pub fn task_id(path: &str) -> Option<u64> {
    path.strip_prefix(TASK_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd() {
        assert_eq!(escape("web"), "web");
        assert_eq!(escape("my-app_2"), "my_2dapp_5f2");
        assert_eq!(escape(""), "_");
        assert_eq!(escape("é"), "_c3_a9");
        for name in ["web", "my-app_2", "", "a.b-c_d", "é"] {
            assert_eq!(unescape(&escape(name)).as_deref(), Some(name));
        }
        assert_eq!(unescape("_zz"), None);
        assert_eq!(
            service_path("my-app").as_str(),
            "/org/stackd1/service/my_2dapp"
        );
        assert_eq!(task_id(task_path(42).as_str()), Some(42));
    }
}
