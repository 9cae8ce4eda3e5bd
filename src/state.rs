//! The words of a service's state, as systemd spells them: [`ActiveState`]
//! and [`SubState`]. Enums where stackd makes and compares them; strings
//! only at the edges (D-Bus properties of type `s`, peer JSON, the CLI's
//! text), in exactly systemd's spelling.
//!
//! Both are *open*: systemd (for unit services) and a peer of another
//! version may send a word stackd does not know. It parses as `Other` and
//! is shown as it came, so nothing a remote says is lost or refused.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::health::Health;
use crate::store::ParseEnumError;
use crate::tasks::TaskKind;

/// Declares an open enum: fixed names, and `Other(String)` for any other
/// word. `as_str`, `Display`, an infallible `FromStr` (a known word always
/// parses to its variant, never to `Other`) and serde as a plain string.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
        $( $(#[$xmeta:meta])* and $xvariant:ident($xty:ty); )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            $( $(#[$xmeta])* $xvariant($xty), )?
            /// A word stackd does not know (from systemd or a newer peer),
            /// kept as it came.
            Other(String),
        }

        impl $name {
            /// Every known value, in declaration order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// The word on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $( $name::$xvariant(x) => x.as_str(), )?
                    $name::Other(s) => s,
                }
            }

        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                match s.as_str() {
                    $($text => return $name::$variant,)+
                    _ => {}
                }
                $( if let Some(x) = <$xty>::parse(&s) {
                    return $name::$xvariant(x);
                } )?
                $name::Other(s)
            }
        }

        impl fmt::Display for $name {
            /// The word, padded as `{:10}` asks (the CLI's columns).
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($name::from(String::deserialize(d)?))
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name::from(s.to_owned())
            }
        }

        impl FromStr for $name {
            type Err = Infallible;

            fn from_str(s: &str) -> Result<Self, Infallible> {
                Ok($name::from(s.to_owned()))
            }
        }
    };
}

open_enum! {
    /// systemd's `ActiveState`: whether the service runs, in one word.
    pub enum ActiveState {
        Active = "active",
        Reloading = "reloading",
        Inactive = "inactive",
        Failed = "failed",
        Activating = "activating",
        Deactivating = "deactivating",
    }
}

/// systemd's word for a unit it has nothing of.
impl Default for ActiveState {
    fn default() -> ActiveState {
        ActiveState::Inactive
    }
}

open_enum! {
    /// systemd's `SubState`: the detail under [`ActiveState`]. A unit
    /// service shows systemd's own (most of which are `Other`); while a
    /// task runs, a Compose service shows the task's kind.
    pub enum SubState {
        Running = "running",
        Exited = "exited",
        /// Some of the project's containers run, not all.
        Partial = "partial",
        Failed = "failed",
        Dead = "dead",
        /// The supervisor stopped trying to bring it back.
        GaveUp = "gave-up",
        /// The supervisor waits before it tries again.
        Waiting = "waiting",
        /// An external service whose probe fails.
        Unhealthy = "unhealthy",
        /// An external service not probed yet.
        Probing = "probing",
    }
    /// A task of this kind runs: its name ("deploy", "stop", ...).
    and Task(TaskKind);
}

/// [`Health`]'s words: "unknown", "starting", "healthy", "degraded",
/// "unhealthy". Closed, unlike the two above (the health machine matches
/// on it); a word a newer peer might send and stackd does not know reads
/// as `unknown`, which is what it means to this host ([`Health::read`]).
impl Health {
    /// Every value, in the machine's order.
    pub const ALL: [Health; 5] = [
        Health::Unknown,
        Health::Starting,
        Health::Healthy,
        Health::Degraded,
        Health::Unhealthy,
    ];
    const NAMES: &'static [&'static str] =
        &["unknown", "starting", "healthy", "degraded", "unhealthy"];

    /// A word from the wire; one stackd does not know is `Unknown`.
    pub fn read(s: &str) -> Health {
        s.parse().unwrap_or(Health::Unknown)
    }
}

impl FromStr for Health {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Health, ParseEnumError> {
        Health::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| ParseEnumError {
                what: "health",
                value: s.to_owned(),
                expected: Health::NAMES,
            })
    }
}

impl Serialize for Health {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Health {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Health::read(&String::deserialize(d)?))
    }
}

/// systemd's word for a unit it has nothing of.
impl Default for SubState {
    fn default() -> SubState {
        SubState::Dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `values` are shown as exactly `words` (the text on the wire today),
    /// and each parses back and goes through JSON as that string.
    fn words_round_trip<T>(values: &[T], words: &[&str])
    where
        T: fmt::Display + fmt::Debug + PartialEq + FromStr + Serialize,
        T: for<'de> Deserialize<'de>,
        T::Err: fmt::Debug,
    {
        let shown: Vec<String> = values.iter().map(T::to_string).collect();
        assert_eq!(shown, words);
        for v in values {
            assert_eq!(&v.to_string().parse::<T>().unwrap(), v);
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{v}\""));
            assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), v);
        }
    }

    #[test]
    fn active_states_are_systemds_words_and_round_trip() {
        words_round_trip(
            ActiveState::KNOWN,
            &[
                "active",
                "reloading",
                "inactive",
                "failed",
                "activating",
                "deactivating",
            ],
        );
        // The CLI's columns pad them as they padded the text.
        assert_eq!(format!("{:12}|", ActiveState::Active), "active      |");
        assert_eq!(format!("{:10}|", Health::Healthy), "healthy   |");
        // systemd's words stackd has no variant for pass through unchanged.
        let odd: ActiveState = "maintenance".parse().unwrap();
        assert_eq!(odd, ActiveState::Other("maintenance".into()));
        assert_eq!(serde_json::to_string(&odd).unwrap(), "\"maintenance\"");
    }

    #[test]
    fn sub_states_are_the_words_shown_today_and_round_trip() {
        words_round_trip(
            SubState::KNOWN,
            &[
                "running",
                "exited",
                "partial",
                "failed",
                "dead",
                "gave-up",
                "waiting",
                "unhealthy",
                "probing",
            ],
        );
        let tasks: Vec<SubState> = TaskKind::ALL.into_iter().map(SubState::Task).collect();
        let names: Vec<&str> = TaskKind::ALL.iter().map(|k| k.as_str()).collect();
        words_round_trip(&tasks, &names);
        let unit: SubState = "auto-restart".parse().unwrap();
        assert_eq!(unit, SubState::Other("auto-restart".into()));
        assert_eq!(unit.to_string(), "auto-restart");
        // A known word from the wire is its variant, never `Other`.
        assert_eq!(
            serde_json::from_str::<SubState>("\"running\"").unwrap(),
            SubState::Running
        );
    }

    #[test]
    fn health_words_are_the_ones_on_the_wire_and_round_trip() {
        words_round_trip(
            &Health::ALL,
            &["unknown", "starting", "healthy", "degraded", "unhealthy"],
        );
        assert!("sick".parse::<Health>().is_err());
        assert_eq!(Health::read("sick"), Health::Unknown);
        assert_eq!(
            serde_json::from_str::<Health>("\"sick\"").unwrap(),
            Health::Unknown
        );
    }
}
