//! The accept loop, and what keeps it alive against hostile or broken clients: accept errors
//! (running out of file descriptors above all) are logged and survived after a short back-off,
//! connections are capped in total and while they have not logged in, and the soft open-files
//! limit is raised to the hard one at start. Also the TLS front door: ALPN `mqtt` or an alert.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, sleep};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, StartHandshake};

use super::broker::Gateway;
use super::{ALPN, Console, session};

/// File descriptors kept back from connections: the runtime, stdio, the listener, the cert dir.
const RESERVED_FDS: usize = 32;
/// Per authorizer worker: its stdin and stdout pipes, and room for what node opens meanwhile.
const FDS_PER_WORKER: usize = 4;
/// The first pause after a failed accept; doubled while accept keeps failing.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Repeated warnings (accept errors, connections turned away) are printed at most this often.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The connection caps in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connections: usize,
    pub pending: usize,
}

impl Limits {
    /// Raises the soft open-files limit to the hard one, then fits the caps asked for under it
    /// (saying so when they had to be lowered), so that accepting never runs the process out of
    /// descriptors it needs for the authorizer workers.
    pub fn fit(connections: usize, pending: usize, workers: usize, console: Console) -> Self {
        let open_files = raise_open_files_limit();
        let (limits, lowered) = Self::within(connections, pending, workers, open_files);
        if lowered && let Some(open_files) = open_files {
            console.line(format!(
                "the open-files limit is {open_files}: serving at most {} connections, {} of them \
                 not yet logged in (raise the hard limit, `ulimit -Hn`, to serve more)",
                limits.connections, limits.pending
            ));
        }
        limits
    }

    /// The caps under an open-files limit (`None`: unknown, so not limited), and whether they
    /// were lowered.
    fn within(
        connections: usize,
        pending: usize,
        workers: usize,
        open_files: Option<u64>,
    ) -> (Self, bool) {
        let room = open_files.map_or(usize::MAX, |n| {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            n.saturating_sub(RESERVED_FDS + FDS_PER_WORKER * workers)
                .max(1)
        });
        let fitted = connections.min(room);
        let limits = Self {
            connections: fitted,
            pending: pending.min(fitted),
        };
        (limits, fitted < connections)
    }
}

/// The soft RLIMIT_NOFILE after raising it to the hard limit; `None` where there is no such
/// limit. A failure to raise it leaves the current one, which is then what the caps fit under.
fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::increase_nofile_limit(u64::MAX).ok().or_else(|| {
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|l| l.0)
        })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

tokio::task_local! {
    /// The "not yet logged in" slot of the connection whose task this is.
    static PENDING: RefCell<Option<OwnedSemaphorePermit>>;
}

/// Marks the current connection as past its login, freeing its "not yet logged in" slot. The
/// authorizer's verdict is that moment (the CONNACK follows at once), so the authorizer handle
/// calls this and the session needs no part in the caps. A no-op outside a connection's task
/// and after the first call.
pub fn logged_in() {
    let _ = PENDING.try_with(|slot| slot.borrow_mut().take());
}

/// Accepts connections for as long as the process runs; each connection runs on its own task.
pub async fn serve(socket: TcpListener, gateway: Arc<Gateway>, limits: Limits) {
    let console = gateway.console;
    accept_loop(
        || socket.accept(),
        limits,
        console,
        move |tcp, peer| session::run(gateway.clone(), tcp, peer),
    )
    .await
}

/// The accept loop behind [`serve`], with where connections come from and what serves one left
/// open so that a test can make `accept` fail as it does when the process runs out of
/// descriptors (EMFILE), which the caps normally keep it from reaching.
async fn accept_loop<A, F, S, C>(mut accept: A, limits: Limits, console: Console, mut serve_one: S)
where
    A: FnMut() -> F,
    F: Future<Output = io::Result<(TcpStream, SocketAddr)>>,
    S: FnMut(TcpStream, SocketAddr) -> C,
    C: Future<Output = ()> + Send + 'static,
{
    let connections = Arc::new(Semaphore::new(limits.connections));
    let pending = Arc::new(Semaphore::new(limits.pending));
    let mut accept_failed = Warning::default();
    let mut turned_away = Warning::default();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let (tcp, peer) = match accept().await {
            Ok(accepted) => {
                backoff = FIRST_BACKOFF;
                accepted
            }
            Err(e) => {
                // EMFILE and ENFILE clear only when connections close, ECONNABORTED at once;
                // none of them is a reason to stop serving the connections already up.
                accept_failed.note(console, || {
                    format!("accepting a connection failed: {e}; retrying in {backoff:?}")
                });
                sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let slots = connections
            .clone()
            .try_acquire_owned()
            .ok()
            .zip(pending.clone().try_acquire_owned().ok());
        let Some((open, login)) = slots else {
            let open = limits.connections - connections.available_permits();
            let waiting = limits.pending - pending.available_permits();
            turned_away.note(console, || {
                format!(
                    "turned away {peer}: {open} connections open (--max-connections {}), \
                     {waiting} not yet logged in (--max-pending {})",
                    limits.connections, limits.pending
                )
            });
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let connection = serve_one(tcp, peer);
        tokio::spawn(async move {
            PENDING.scope(RefCell::new(Some(login)), connection).await;
            drop(open);
        });
    }
}

/// A warning that may repeat fast (every accept): printed at once, then at most every
/// `WARN_EVERY` with the count of those not printed.
#[derive(Default)]
struct Warning {
    last: Option<Instant>,
    unprinted: u64,
}

impl Warning {
    fn note(&mut self, console: Console, line: impl FnOnce() -> String) {
        if self.last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            self.unprinted += 1;
            return;
        }
        let more = match std::mem::take(&mut self.unprinted) {
            0 => String::new(),
            n => format!(" ({n} more like this since the last report)"),
        };
        console.line(format!("{}{more}", line()));
        self.last = Some(Instant::now());
    }
}

/// The TLS acceptor: IoT's custom authentication on port 443 needs ALPN `mqtt`. rustls itself
/// refuses a client that offers only other protocols, but completes the handshake with one
/// that offers none (RFC 7301 allows it); such a client would then see a silent close. So the
/// ClientHello is read first, and a client that did not offer `mqtt` gets the fatal
/// `no_application_protocol` alert, which its TLS library reports in plain words.
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
}

/// A fatal `no_application_protocol` (120) alert record, sent in the clear as every alert before
/// the handshake's keys exist: content type alert (21), legacy record version TLS 1.2 (RFC 8446
/// §5.1), length 2, level fatal (2), description 120 (RFC 7301 §3.2).
const NO_APPLICATION_PROTOCOL: [u8; 7] = [21, 3, 3, 0, 2, 2, 120];

impl Tls {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self { config }
    }

    /// The TLS handshake with a client that offered ALPN `mqtt`.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let offers_mqtt = start
            .client_hello()
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ALPN));
        if offers_mqtt {
            return start.into_stream(self.config.clone()).await;
        }
        let StartHandshake { mut io, .. } = start;
        // Best effort: the client may be gone already; it is refused either way.
        let _ = io.write_all(&NO_APPLICATION_PROTOCOL).await;
        let _ = io.shutdown().await;
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the client did not negotiate ALPN `mqtt`, which IoT requires for custom \
             authentication on port 443 (sent it the TLS alert no_application_protocol)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_under_the_open_files_limit() {
        let unlimited = Limits::within(10_000, 256, 4, None);
        assert_eq!(
            unlimited,
            (
                Limits {
                    connections: 10_000,
                    pending: 256
                },
                false
            )
        );
        let roomy = Limits::within(10_000, 256, 4, Some(1 << 20));
        assert!(!roomy.1);
        // `ulimit -n 64` with 4 workers: 64 - 32 - 16 descriptors for connections.
        let (tight, lowered) = Limits::within(10_000, 256, 4, Some(64));
        assert!(lowered);
        assert_eq!(
            tight,
            Limits {
                connections: 16,
                pending: 16
            }
        );
        let (tiny, _) = Limits::within(10, 5, 64, Some(64));
        assert_eq!(tiny.connections, 1, "never zero");
    }

    #[tokio::test]
    async fn the_pending_slot_is_freed_once() {
        let pending = Arc::new(Semaphore::new(1));
        let slot = pending.clone().try_acquire_owned().unwrap();
        let seen = pending.clone();
        PENDING
            .scope(RefCell::new(Some(slot)), async move {
                assert_eq!(seen.available_permits(), 0);
                logged_in();
                assert_eq!(seen.available_permits(), 1);
                logged_in();
                assert_eq!(seen.available_permits(), 1);
            })
            .await;
        logged_in();
    }

    /// Accept failing as it does out of descriptors is reported (once, then summarised) and
    /// survived: the connections that come after it are served.
    #[tokio::test]
    async fn accept_errors_are_reported_and_survived() {
        use tokio::io::AsyncReadExt as _;
        let mut lines = super::super::tap_console().expect("only this unit test taps the console");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let listener = Arc::new(listener);
        let failures = Arc::new(std::sync::atomic::AtomicUsize::new(3));
        let accept = move || {
            let listener = listener.clone();
            let failures = failures.clone();
            async move {
                let left = failures.load(std::sync::atomic::Ordering::SeqCst);
                if left > 0 {
                    failures.store(left - 1, std::sync::atomic::Ordering::SeqCst);
                    // EMFILE, "Too many open files".
                    return Err(io::Error::from_raw_os_error(24));
                }
                listener.accept().await
            }
        };
        let limits = Limits {
            connections: 8,
            pending: 8,
        };
        let serve_one = |mut tcp: TcpStream, _| async move {
            let _ = tcp.write_all(b"served").await;
        };
        let gateway = tokio::spawn(accept_loop(
            accept,
            limits,
            Console { quiet: true },
            serve_one,
        ));
        for _ in 0..2 {
            let mut client = TcpStream::connect(address).await.unwrap();
            let mut reply = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut reply))
                .await
                .expect("served after the accept errors")
                .unwrap();
            assert_eq!(reply, b"served");
        }
        assert!(!gateway.is_finished(), "the accept loop is still running");
        gateway.abort();
        let first = lines.recv().await.unwrap();
        assert!(
            first.starts_with("accepting a connection failed: Too many open files")
                && first.ends_with("retrying in 10ms"),
            "{first}"
        );
        assert!(
            lines.try_recv().is_err(),
            "the next two failures within {WARN_EVERY:?} are counted, not printed"
        );
    }
}
