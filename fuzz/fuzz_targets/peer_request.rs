//! The peer endpoint's request decoding (route, path parameters, query,
//! JSON body) on arbitrary input: every input gets an answer, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stackd::fuzz::peer_request(data);
});
