//! A TCP forwarder that a test can cut and restore, to take a real server
//! (PostgreSQL, Redis) away from the platform and give it back without
//! stopping the server itself, which other tests share.
//!
//! While cut, every open connection is closed and new ones are accepted and
//! closed at once, as a server that went away (or a network that dropped
//! it) looks to a client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A forwarder from a loopback port to `target`.
#[derive(Debug)]
pub struct CuttableProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped at every cut: connections opened before it end.
    epoch: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl CuttableProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let (epoch, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let cut = Arc::clone(&cut);
            let epoch = epoch.clone();
            let accepted = Arc::clone(&accepted);
            async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::Relaxed);
                    if cut.load(Ordering::Acquire) {
                        drop(client);
                        continue;
                    }
                    let mut ended = epoch.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = copy_bidirectional(&mut client, &mut server) => {}
                            _ = ended.changed() => {}
                        }
                    });
                }
            }
        });
        Ok(Self {
            addr,
            cut,
            epoch,
            accepted,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::Release);
    }

    /// Connections accepted so far (forwarded or refused).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
