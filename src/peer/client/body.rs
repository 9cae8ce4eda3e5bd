//! What crosses the peer client's connection besides JSON: a request's
//! body, a streamed answer read as lines, and the encoding of names in a
//! path.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};

/// A streamed text body as its lines (without the newline); a body cut
/// short ends with a line saying so, as a local log stream does.
pub(super) fn lines_of(body: Incoming, url: String) -> BoxStream<'static, String> {
    struct State {
        body: Incoming,
        pending: Vec<u8>,
        ready: std::collections::VecDeque<String>,
        done: bool,
        url: String,
    }
    let state = State {
        body,
        pending: Vec::new(),
        ready: Default::default(),
        done: false,
        url,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(line) = st.ready.pop_front() {
                return Some((line, st));
            }
            if st.done {
                return None;
            }
            match st.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        st.pending.extend_from_slice(&data);
                        while let Some(i) = st.pending.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = st.pending.drain(..=i).collect();
                            let text = String::from_utf8_lossy(&line[..i]).into_owned();
                            st.ready.push_back(text);
                        }
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.ready
                        .push_back(format!("(log stream from {} ended: {e})", st.url));
                }
                None => {
                    st.done = true;
                    if !st.pending.is_empty() {
                        let rest = std::mem::take(&mut st.pending);
                        st.ready
                            .push_back(String::from_utf8_lossy(&rest).into_owned());
                    }
                }
            }
        }
    })
    .boxed()
}

/// A request body and what it is.
pub(super) enum Body {
    Json(Vec<u8>),
    Toml(Vec<u8>),
    /// Streamed as it comes (chunked).
    Stream(UnsyncBoxBody<Bytes, std::io::Error>),
}

/// `/v1/services/{name}/{step}`.
pub(super) fn service_path(name: &str, step: &str) -> String {
    format!("/v1/services/{}/{step}", encode(name))
}

/// Percent-encodes a path segment or query value.
pub(super) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
