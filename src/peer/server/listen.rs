//! The listener: peer.listen's socket or the one systemd passed, and the
//! accept loop, which waits on the connection gate (`limits.rs`) before
//! each accept and serves every connection with hyper (TLS when configured).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, info};

use super::handlers::handle;
use super::{State, HEADER_TIMEOUT};
use crate::peer::PeerError;

pub(super) async fn listener(listen: &str) -> Result<TcpListener, PeerError> {
    let err = |source| PeerError::Listen {
        listen: listen.to_string(),
        source,
    };
    if let Some(std) = systemd_socket() {
        info!("peer endpoint: using the socket passed by systemd");
        std.set_nonblocking(true).map_err(err)?;
        return TcpListener::from_std(std).map_err(err);
    }
    TcpListener::bind(listen).await.map_err(err)
}

/// The first socket systemd passed (`LISTEN_FDS`, `LISTEN_PID`: fd 3).
fn systemd_socket() -> Option<std::net::TcpListener> {
    let fd = sd_notify::listen_fds().ok()?.next()?;
    // SAFETY: sd_notify checked LISTEN_PID is this process, so systemd gave
    // us this descriptor; it is taken once, here, and owned from now on.
    #[allow(unsafe_code)]
    let listener = unsafe { <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    Some(listener)
}

pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
) {
    loop {
        // Room first (connection caps, the descriptors' reserve): until
        // then new connections wait in the kernel's backlog.
        tokio::select! {
            () = state.gate.wait_for_room() => {}
            _ = state.cancel.cancelled() => return,
        }
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    state.gate.accept_failed(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = state.cancel.cancelled() => return,
        };
        let Some(permit) = state.gate.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let cancel = state.cancel.clone();
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req, peer).await) }
            });
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true);
                b
            };
            let result = match tls {
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                debug!("peer {peer}: TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => return,
                        };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! { r = conn => r, _ = cancel.cancelled() => Ok(()) }
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! { r = conn => r, _ = cancel.cancelled() => Ok(()) }
                }
            };
            if let Err(e) = result {
                debug!("peer {peer}: connection ended: {e}");
            }
        });
    }
}
