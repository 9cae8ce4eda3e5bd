//! Located values: where each was written ([`At`], [`Loc`], [`LocMap`]),
//! and the shapes a value may take (`HostSpec`, `Environment`, numbers,
//! string lists), each deserialized so that it keeps its place.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};

thread_local! {
    /// Index of the file being deserialized; stamped into every [`Loc`].
    pub(super) static CURRENT_FILE: Cell<usize> = const { Cell::new(0) };
}

/// Where something was written: which source file, which byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct At {
    pub file: usize,
    pub offset: usize,
}

/// A value with the place it was written.
#[derive(Debug, Clone)]
pub(crate) struct Loc<T> {
    pub value: T,
    pub at: At,
}

// The protocol toml uses for `toml::Spanned`; reimplemented so that a table
// given where a plain value is expected gets a sensible message instead of
// the one `Spanned` produces for tables without a span.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loc<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LocVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for LocVisitor<T> {
            type Value = Loc<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loc<T>, A::Error> {
                let key: Option<String> = map.next_key()?;
                if key.as_deref() != Some(SPANNED_START) {
                    return Err(de::Error::invalid_type(Unexpected::Map, &"a value"));
                }
                let offset: usize = map.next_value()?;
                let _: Option<String> = map.next_key()?;
                let _end: usize = map.next_value()?;
                let _: Option<String> = map.next_key()?;
                let value: T = map.next_value()?;
                let file = CURRENT_FILE.with(Cell::get);
                Ok(Loc {
                    value,
                    at: At { file, offset },
                })
            }
        }
        d.deserialize_struct(
            SPANNED_NAME,
            &[SPANNED_START, SPANNED_END, SPANNED_VALUE],
            LocVisitor(PhantomData),
        )
    }
}

/// A table of named sub-tables (`[services.NAME]`, `[hosts.NAME]`, ...),
/// each with the location of its name.
#[derive(Debug, Clone)]
pub(crate) struct LocMap<R>(pub BTreeMap<String, (At, R)>);

impl<R> Default for LocMap<R> {
    fn default() -> Self {
        LocMap(BTreeMap::new())
    }
}

/// The header of a named table, for error messages.
pub(crate) trait Section {
    const HEADER: &'static str;
}

impl<'de, R: Deserialize<'de> + Section> Deserialize<'de> for LocMap<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<R>(PhantomData<R>);
        impl<'de, R: Deserialize<'de> + Section> Visitor<'de> for MapVisitor<R> {
            type Value = LocMap<R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "tables written as {}", R::HEADER)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LocMap<R>, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<Loc<String>>()? {
                    let value: R = map.next_value()?;
                    out.insert(key.value, (key.at, value));
                }
                Ok(LocMap(out))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

/// `host = "nuc"`, `host = ["nuc", "hp"]` or `host = "all"`.
#[derive(Debug, Clone)]
pub(crate) enum HostSpec {
    One(String),
    List(Vec<Loc<String>>),
}

impl<'de> Deserialize<'de> for HostSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HostVisitor;
        impl<'de> Visitor<'de> for HostVisitor {
            type Value = HostSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a host name, a list of host names, or \"all\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HostSpec, E> {
                Ok(HostSpec::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HostSpec, A::Error> {
                let mut out = Vec::new();
                while let Some(h) = seq.next_element::<Loc<String>>()? {
                    out.push(h);
                }
                Ok(HostSpec::List(out))
            }
        }
        d.deserialize_any(HostVisitor)
    }
}

/// `environment = { K = "V" }` or `environment = ["K=V"]`; each value
/// located.
#[derive(Debug, Clone)]
pub(crate) enum Environment {
    Table(Vec<(Loc<String>, Loc<String>)>),
    List(Vec<Loc<String>>),
}

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Environment;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a table of variables, e.g. { RUST_LOG = \"info\" }, or a list of \
                     \"NAME=VALUE\" strings",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Environment, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Loc<String>>()? {
                    let v: Loc<String> = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Environment::Table(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Environment, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<Loc<String>>()? {
                    out.push(s);
                }
                Ok(Environment::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value that may be written as a string or an integer
/// (`memory = 536870912` or `memory = "512M"`, `expect_status = 200`).
#[derive(Debug, Clone)]
pub(crate) enum StrOrInt {
    Str(String),
    Int(i64),
}

impl<'de> Deserialize<'de> for StrOrInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrInt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrInt, E> {
                Ok(StrOrInt::Str(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrInt, E> {
                Ok(StrOrInt::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrInt, E> {
                i64::try_from(v)
                    .map(StrOrInt::Int)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value that may be written as a string or a number
/// (`reload_guard = 0.5` or `reload_guard = "50%"`).
#[derive(Debug, Clone)]
pub(crate) enum StrOrNum {
    Str(String),
    Num(f64),
}

impl StrOrNum {
    /// A share as a number (`0.1`) or a percentage (`"10%"`), unchecked;
    /// None when a string is not a percentage.
    pub(crate) fn fraction(&self) -> Option<f64> {
        match self {
            StrOrNum::Num(n) => Some(*n),
            StrOrNum::Str(s) => s
                .trim()
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .map(|p| p / 100.0),
        }
    }
}

impl<'de> Deserialize<'de> for StrOrNum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrNum;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a fraction such as 0.5 or a percentage such as \"50%\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrNum, E> {
                Ok(StrOrNum::Str(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrNum, E> {
                Ok(StrOrNum::Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrNum, E> {
                Ok(StrOrNum::Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrOrNum, E> {
                Ok(StrOrNum::Num(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// An integer; exists for the error message ("expected an integer", not "i64").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number, integer or float; exists for the error message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Num(pub f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list of strings, each located; exists for the error message
/// ("expected a list of strings", not "a sequence").
#[derive(Debug, Clone, Default)]
pub(crate) struct Strings(pub Vec<Loc<String>>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings, e.g. [\"a\", \"b\"]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<Loc<String>>()? {
                    out.push(s);
                }
                Ok(Strings(out))
            }
        }
        d.deserialize_seq(V)
    }
}

impl std::ops::Deref for Strings {
    type Target = [Loc<String>];
    fn deref(&self) -> &[Loc<String>] {
        &self.0
    }
}

impl Strings {
    pub(in crate::config) fn values(&self) -> Vec<String> {
        self.0.iter().map(|l| l.value.clone()).collect()
    }
}
