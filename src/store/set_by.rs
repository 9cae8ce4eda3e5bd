//! [`SetBy`]: who set a service's desired state, as `stackctl status`
//! says it ("set by user", "stopped outside stackd (docker stop)"). An
//! enum where it is made (`Desired::set_by`) and read (the CLI, an
//! apply's summary); its text is the `DesiredSource` property on D-Bus
//! and `desired_source` in peer JSON.

use super::origin::read_shaped;
use super::IN_DOUBT;

/// Who set a desired state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetBy {
    /// `auto_start` in the cluster file: "config".
    Config,
    /// A person: "user".
    User,
    /// A move whose other host is not recorded: "migrate".
    Migrate,
    /// Moved here from HOST: "migrate from HOST".
    MigrateFrom(String),
    /// Moved away to HOST: "migrate to HOST".
    MigrateTo(String),
    /// A move to HOST whose outcome is unknown: "migrate to HOST (in doubt)".
    InDoubt(String),
    /// A move to HOST failed before it started there; kept here: "kept
    /// here: its move to HOST failed".
    KeptHere(String),
    /// Stopped through Docker, outside stackd, by DOOR ("docker stop"):
    /// "stopped outside stackd (DOOR)".
    Outside(String),
    /// A word of another version, kept as it came.
    Other(String),
}

impl SetBy {
    /// The text on the wires and in the CLI.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow::{Borrowed, Owned};
        match self {
            SetBy::Config => Borrowed("config"),
            SetBy::User => Borrowed("user"),
            SetBy::Migrate => Borrowed("migrate"),
            SetBy::MigrateFrom(h) => Owned(format!("migrate from {h}")),
            SetBy::MigrateTo(h) => Owned(format!("migrate to {h}")),
            SetBy::InDoubt(h) => Owned(format!("migrate to {h} ({IN_DOUBT})")),
            SetBy::KeptHere(h) => Owned(format!("kept here: its move to {h} failed")),
            SetBy::Outside(door) => Owned(format!("stopped outside stackd ({door})")),
            SetBy::Other(s) => Borrowed(s),
        }
    }

    /// Reads the text back; never fails (see `Other`).
    pub fn parse(s: &str) -> SetBy {
        match s {
            "config" => return SetBy::Config,
            "user" => return SetBy::User,
            "migrate" => return SetBy::Migrate,
            _ => {}
        }
        // " (in doubt)" is IN_DOUBT in parentheses; the test pins the text.
        read_shaped(
            s,
            &[
                ("stopped outside stackd (", ")", SetBy::Outside),
                ("kept here: its move to ", " failed", SetBy::KeptHere),
                ("migrate to ", " (in doubt)", SetBy::InDoubt),
                ("migrate to ", "", SetBy::MigrateTo),
                ("migrate from ", "", SetBy::MigrateFrom),
            ],
        )
        .unwrap_or_else(|| SetBy::Other(s.to_string()))
    }
}

super::origin::as_text!(SetBy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_is_the_text_shown_today_and_parses_back() {
        let cases = [
            (SetBy::Config, "config"),
            (SetBy::User, "user"),
            (SetBy::Migrate, "migrate"),
            (SetBy::MigrateFrom("hosta".into()), "migrate from hosta"),
            (SetBy::MigrateTo("b".into()), "migrate to b"),
            (SetBy::InDoubt("b".into()), "migrate to b (in doubt)"),
            (
                SetBy::KeptHere("b".into()),
                "kept here: its move to b failed",
            ),
            (
                SetBy::Outside("docker stop".into()),
                "stopped outside stackd (docker stop)",
            ),
            (SetBy::Other("by a newer host".into()), "by a newer host"),
        ];
        for (by, text) in cases {
            assert_eq!(by.to_string(), text);
            assert_eq!(SetBy::parse(text), by, "{text}");
            let json = serde_json::to_string(&by).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(serde_json::from_str::<SetBy>(&json).unwrap(), by);
        }
    }
}
