//! The cluster file parser and validator on arbitrary text: every input
//! gets a `Config` or diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stackd::fuzz::config(data);
});
