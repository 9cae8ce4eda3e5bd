//! The core's view of the other hosts ([`Peers`]) over their peer
//! endpoints: one client per call, with `[peer]`'s token and timeout.

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use hyper::body::Bytes;

use super::{PeerClient, PeerClientError};
use crate::config::PeerConfig;
use crate::control::{PeerFailure, PeerService, Peers, RemoteTask, VolumeOffer, VolumeReceipt};

/// Reaches the hosts named in the cluster file.
pub struct Cluster;

fn failure(e: PeerClientError) -> PeerFailure {
    match e {
        PeerClientError::Remote { kind, message, .. } => PeerFailure::Refused { kind, message },
        other => PeerFailure::Unreachable(other.to_string()),
    }
}

fn client(peer: &PeerConfig, url: &str) -> Result<PeerClient, PeerFailure> {
    PeerClient::new(url, peer).map_err(failure)
}

impl Peers for Cluster {
    fn service<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PeerService>, PeerFailure>> {
        Box::pin(async move {
            match client(peer, url)?.service(name).await {
                Ok(s) => Ok(Some(PeerService {
                    desired_state: s.desired_state,
                    active_state: s.active_state,
                    sub_state: s.sub_state,
                    desired_since_usec: s.desired_since_usec,
                })),
                Err(e) if e.kind() == Some("NoSuchService") => Ok(None),
                Err(e) => Err(failure(e)),
            }
        })
    }

    fn known_services<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, PeerFailure>> {
        Box::pin(async move { Ok(client(peer, url)?.host().await.map_err(failure)?.services) })
    }

    fn prepare<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
        from: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, PeerFailure>> {
        Box::pin(async move {
            let answer = client(peer, url)?.prepare(name, from).await;
            Ok(answer.map_err(failure)?.pull.map(|t| t.id))
        })
    }

    fn receive<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
        from: &'a str,
    ) -> BoxFuture<'a, Result<u64, PeerFailure>> {
        Box::pin(async move {
            let task = client(peer, url)?.receive(name, from).await;
            Ok(task.map_err(failure)?.id)
        })
    }

    fn task<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<RemoteTask, PeerFailure>> {
        Box::pin(async move {
            let t = client(peer, url)?.task(id).await.map_err(failure)?;
            Ok(RemoteTask {
                state: t.state,
                result: t.result,
                error: t.error,
            })
        })
    }

    fn send_volume<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        offer: &'a VolumeOffer,
        tar: BoxStream<'static, Result<Bytes, String>>,
    ) -> BoxFuture<'a, Result<VolumeReceipt, PeerFailure>> {
        Box::pin(async move {
            let a = client(peer, url)?
                .put_volume(offer, tar)
                .await
                .map_err(failure)?;
            Ok(VolumeReceipt {
                bytes: a.bytes,
                sha256: a.sha256,
                replaced: a.replaced,
            })
        })
    }
}
