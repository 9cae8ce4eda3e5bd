//! [`Origin`]: who asked for a task. An enum where tasks are made and
//! where the runner decides by it; the text in the store's `origin`
//! column, on D-Bus (`Task.Origin`), in peer JSON and in the task log.

/// Who asked for a task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A D-Bus caller, by its unique name: "dbus:SENDER".
    Dbus(String),
    /// The private socket, which has no sender: "private".
    Private,
    /// The peer endpoint: "peer:IP" or "peer:IP:CALLER".
    Peer(String),
    /// The start-up reconcile after a reboot: "boot".
    Boot,
    /// The start-up reconcile otherwise: "start".
    Start,
    /// The reconcile after the Docker engine came back: "engine".
    Engine,
    /// The redeploy of a task a crash interrupted: "interrupted".
    Interrupted,
    /// The supervisor bringing a service back: "recovery".
    Recovery,
    /// Housekeeping's scheduled prune: "schedule".
    Schedule,
    /// A service moving here from HOST: "migrate from HOST".
    MigrateFrom(String),
    /// A move to HOST that did not happen, undone here: "move to HOST did
    /// not happen".
    MoveLost(String),
    /// Two hosts ran one service; HOST keeps it: "conflict on heal: HOST
    /// keeps it".
    HealConflict(String),
    /// The reconcile of an `apply --all-hosts` that only stops what left
    /// this host: "apply --all-hosts (leaving)".
    Leaving,
    /// The reconcile of an `apply --all-hosts` PEER asked for: "apply
    /// --all-hosts (PEER)".
    AllHosts(String),
    /// Anything else (tests, a record of another version), kept as it is.
    Other(String),
}

impl Origin {
    /// Asked by a person (D-Bus, the private socket, a peer), not by
    /// stackd itself (boot, start, engine, recovery, a move).
    pub fn by_person(&self) -> bool {
        matches!(self, Origin::Dbus(_) | Origin::Private | Origin::Peer(_))
    }

    /// A D-Bus origin for this caller ("private" when it has no name).
    pub fn dbus(sender: Option<&str>) -> Origin {
        sender.map_or(Origin::Private, |s| Origin::Dbus(s.to_string()))
    }

    /// A peer endpoint origin: the peer's address, and what the caller
    /// says it is (at most 64 characters of it).
    pub fn peer(ip: std::net::IpAddr, caller: Option<&str>) -> Origin {
        Origin::Peer(match caller {
            Some(c) => format!("{ip}:{}", c.chars().take(64).collect::<String>()),
            None => ip.to_string(),
        })
    }

    /// Reads a stored or sent origin; never fails (see `Other`).
    pub fn parse(s: &str) -> Origin {
        let fixed = [
            ("private", Origin::Private),
            ("boot", Origin::Boot),
            ("start", Origin::Start),
            ("engine", Origin::Engine),
            ("interrupted", Origin::Interrupted),
            ("recovery", Origin::Recovery),
            ("schedule", Origin::Schedule),
            ("apply --all-hosts (leaving)", Origin::Leaving),
        ];
        if let Some((_, o)) = fixed.into_iter().find(|(text, _)| *text == s) {
            return o;
        }
        read_shaped(
            s,
            &[
                ("dbus:", "", Origin::Dbus),
                ("peer:", "", Origin::Peer),
                ("migrate from ", "", Origin::MigrateFrom),
                ("move to ", " did not happen", Origin::MoveLost),
                ("conflict on heal: ", " keeps it", Origin::HealConflict),
                ("apply --all-hosts (", ")", Origin::AllHosts),
            ],
        )
        .unwrap_or_else(|| Origin::Other(s.to_string()))
    }
}

/// A text with a part that varies: (head, tail, the variant it makes of
/// what stands between them).
pub(super) type Shape<T> = (&'static str, &'static str, fn(String) -> T);

/// The first of `shapes` that `s` has, made with what stands between its
/// head and tail.
pub(super) fn read_shaped<T>(s: &str, shapes: &[Shape<T>]) -> Option<T> {
    shapes.iter().find_map(|(head, tail, make)| {
        s.strip_prefix(head)
            .and_then(|r| r.strip_suffix(tail))
            .map(|x| make(x.to_string()))
    })
}

impl Origin {
    /// The text stored and shown.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow::{Borrowed, Owned};
        match self {
            Origin::Dbus(s) => Owned(format!("dbus:{s}")),
            Origin::Private => Borrowed("private"),
            Origin::Peer(s) => Owned(format!("peer:{s}")),
            Origin::Boot => Borrowed("boot"),
            Origin::Start => Borrowed("start"),
            Origin::Engine => Borrowed("engine"),
            Origin::Interrupted => Borrowed("interrupted"),
            Origin::Recovery => Borrowed("recovery"),
            Origin::Schedule => Borrowed("schedule"),
            Origin::MigrateFrom(h) => Owned(format!("migrate from {h}")),
            Origin::MoveLost(h) => Owned(format!("move to {h} did not happen")),
            Origin::HealConflict(h) => Owned(format!("conflict on heal: {h} keeps it")),
            Origin::Leaving => Borrowed("apply --all-hosts (leaving)"),
            Origin::AllHosts(p) => Owned(format!("apply --all-hosts ({p})")),
            Origin::Other(s) => Borrowed(s),
        }
    }
}

/// `Display` (padded as a column asks), an infallible `FromStr` and serde
/// as a plain string, for a type with `text()` and `parse(&str)`: the
/// words that are an enum inside stackd and text on its wires.
macro_rules! as_text {
    ($t:ty) => {
        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.pad(&self.text())
            }
        }

        impl ::std::str::FromStr for $t {
            type Err = ::std::convert::Infallible;

            fn from_str(s: &str) -> Result<$t, ::std::convert::Infallible> {
                Ok(<$t>::parse(s))
            }
        }

        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.text())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(<$t>::parse(&<String as ::serde::Deserialize>::deserialize(
                    d,
                )?))
            }
        }
    };
}
pub(super) use as_text;

as_text!(Origin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_origin_is_the_text_stored_today_and_parses_back() {
        let ip: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let cases = [
            (Origin::Dbus(":1.42".into()), "dbus::1.42"),
            (Origin::dbus(None), "private"),
            (Origin::peer(ip, None), "peer:10.0.0.2"),
            (
                Origin::peer(ip, Some("dbus::1.7@hosta")),
                "peer:10.0.0.2:dbus::1.7@hosta",
            ),
            (Origin::Boot, "boot"),
            (Origin::Start, "start"),
            (Origin::Engine, "engine"),
            (Origin::Interrupted, "interrupted"),
            (Origin::Recovery, "recovery"),
            (Origin::Schedule, "schedule"),
            (Origin::MigrateFrom("hosta".into()), "migrate from hosta"),
            (
                Origin::MoveLost("hostb".into()),
                "move to hostb did not happen",
            ),
            (
                Origin::HealConflict("hostb".into()),
                "conflict on heal: hostb keeps it",
            ),
            (Origin::Leaving, "apply --all-hosts (leaving)"),
            (
                Origin::AllHosts("10.0.0.2:7420".into()),
                "apply --all-hosts (10.0.0.2:7420)",
            ),
            (Origin::Other("test".into()), "test"),
        ];
        for (origin, text) in cases {
            assert_eq!(origin.to_string(), text);
            assert_eq!(format!("{origin:>40}"), format!("{text:>40}"));
            assert_eq!(text.parse::<Origin>().unwrap(), origin, "{text}");
            let json = serde_json::to_string(&origin).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(serde_json::from_str::<Origin>(&json).unwrap(), origin);
        }
    }

    #[test]
    fn only_dbus_the_private_socket_and_peers_are_people() {
        let people = ["dbus::1.42", "private", "peer:10.0.0.2:x"];
        let stackd = [
            "boot",
            "start",
            "engine",
            "interrupted",
            "recovery",
            "schedule",
            "migrate from a",
            "apply --all-hosts (leaving)",
            "test",
        ];
        for s in people {
            assert!(s.parse::<Origin>().unwrap().by_person(), "{s}");
        }
        for s in stackd {
            assert!(!s.parse::<Origin>().unwrap().by_person(), "{s}");
        }
    }
}
