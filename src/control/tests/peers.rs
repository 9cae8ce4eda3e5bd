//! The other hosts, faked: a [`Peers`] whose hosts (by peer URL) answer
//! what the test sets, and that writes down what the core asked of them.
//! A receive makes the service run there and its task succeed, as a
//! healthy host's would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::config::PeerConfig;
use crate::control::{PeerFailure, PeerService, Peers, RemoteTask, VolumeOffer, VolumeReceipt};

#[derive(Default)]
struct Remote {
    down: bool,
    services: HashMap<String, PeerService>,
}

#[derive(Default)]
pub(crate) struct FakePeers {
    hosts: Mutex<HashMap<String, Remote>>,
    calls: Mutex<Vec<String>>,
}

type Answer<'a, T> = BoxFuture<'a, Result<T, PeerFailure>>;

impl FakePeers {
    pub(crate) fn new() -> Arc<FakePeers> {
        Arc::new(FakePeers::default())
    }

    /// The host at `url` reports `name` as wanted `desired` and `active`.
    pub(crate) fn set_service(&self, url: &str, name: &str, desired: &str, active: &str) {
        self.set_service_since(url, name, desired, active, 1);
    }

    /// [`set_service`](Self::set_service), wanted so since `since_usec`
    /// (0: by the cluster file's `auto_start` there).
    pub(crate) fn set_service_since(
        &self,
        url: &str,
        name: &str,
        desired: &str,
        active: &str,
        since_usec: u64,
    ) {
        self.with(url, |r| {
            r.services.insert(
                name.to_string(),
                PeerService {
                    desired_state: desired.to_string(),
                    active_state: active.into(),
                    sub_state: if active == "active" {
                        "running"
                    } else {
                        "dead"
                    }
                    .into(),
                    desired_since_usec: since_usec,
                },
            );
        });
    }

    /// The host at `url` stops (or starts again) answering.
    pub(crate) fn set_down(&self, url: &str, down: bool) {
        self.with(url, |r| r.down = down);
    }

    /// What the core asked, in order: "service NAME @URL", "prepare ...",
    /// "receive NAME from HOST @URL", ...
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn with<T>(&self, url: &str, f: impl FnOnce(&mut Remote) -> T) -> T {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        f(hosts.entry(url.to_string()).or_default())
    }

    fn call(&self, url: &str, what: String) -> Result<(), PeerFailure> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{what} @{url}"));
        if self.with(url, |r| r.down) {
            return Err(PeerFailure::Unreachable("connection refused".to_string()));
        }
        Ok(())
    }
}

impl Peers for FakePeers {
    fn service<'a>(
        &'a self,
        _peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
    ) -> Answer<'a, Option<PeerService>> {
        Box::pin(async move {
            self.call(url, format!("service {name}"))?;
            Ok(self.with(url, |r| r.services.get(name).cloned()))
        })
    }

    fn known_services<'a>(
        &'a self,
        _peer: &'a PeerConfig,
        url: &'a str,
    ) -> Answer<'a, Vec<String>> {
        Box::pin(async move {
            self.call(url, "known_services".to_string())?;
            Ok(self.with(url, |r| r.services.keys().cloned().collect()))
        })
    }

    fn prepare<'a>(
        &'a self,
        _peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
        from: &'a str,
    ) -> Answer<'a, Option<u64>> {
        Box::pin(async move {
            self.call(url, format!("prepare {name} from {from}"))?;
            Ok(None)
        })
    }

    fn receive<'a>(
        &'a self,
        _peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
        from: &'a str,
    ) -> Answer<'a, u64> {
        Box::pin(async move {
            self.call(url, format!("receive {name} from {from}"))?;
            self.set_service(url, name, "running", "active");
            Ok(7)
        })
    }

    fn task<'a>(&'a self, _peer: &'a PeerConfig, url: &'a str, id: u64) -> Answer<'a, RemoteTask> {
        Box::pin(async move {
            self.call(url, format!("task {id}"))?;
            Ok(RemoteTask {
                state: "succeeded".to_string(),
                result: "success".to_string(),
                error: String::new(),
            })
        })
    }

    fn send_volume<'a>(
        &'a self,
        _peer: &'a PeerConfig,
        url: &'a str,
        offer: &'a VolumeOffer,
        _tar: BoxStream<'static, Result<Bytes, String>>,
    ) -> Answer<'a, VolumeReceipt> {
        Box::pin(async move {
            self.call(url, format!("send_volume {}", offer.volume))?;
            Err(PeerFailure::Refused {
                kind: "Failed".to_string(),
                message: "the fake hosts keep no volumes".to_string(),
            })
        })
    }
}
