//! The open-loop query load of the serving and baseline benchmarks.
//!
//! The generator must cost the machine little: on a 2-core host it shares
//! the cores with the server it measures, and every microsecond it spends
//! is one the server waits for. So it runs on one thread of its own, with
//! no handoff between threads: a timerfd paces the sends with nanosecond
//! resolution (Tokio's timer ticks in whole milliseconds, which would
//! batch them and add up to 1 ms to every measurement), and requests go
//! straight to hyper's connection API, without a client pool in between.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::{http1, http2};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

/// The server a load goes to and how.
#[derive(Clone)]
pub struct Target {
    address: SocketAddr,
    protocol: Protocol,
    /// Sent as `Authorization: Bearer ...` with every request.
    bearer_token: Option<String>,
}

#[derive(Clone)]
enum Protocol {
    /// HTTPS, every request multiplexed on one HTTP/2 connection, as
    /// kube-apiserver's aggregator sends them.
    Http2Tls(Arc<rustls::ClientConfig>),
    /// Plain HTTP/1.1, each request in flight on a connection of its own,
    /// at most this many: a client's connection limit. A server that stops
    /// accepting connections past a limit would otherwise leave the excess
    /// waiting. Requests held back still count their latency from their due
    /// time.
    Http1 { connections: usize },
}

impl Target {
    /// HTTPS to `base` (`https://ip:port`), trusting `tls`.
    pub fn http2(base: &str, tls: Arc<rustls::ClientConfig>) -> Self {
        Target { address: address(base, "https://"), protocol: Protocol::Http2Tls(tls), bearer_token: None }
    }

    /// Plain HTTP/1.1 to `base` (`http://ip:port`), at most `connections`.
    pub fn http1(base: &str, connections: usize) -> Self {
        Target { address: address(base, "http://"), protocol: Protocol::Http1 { connections }, bearer_token: None }
    }

    pub fn bearer_token(self, token: &str) -> Self {
        Target { bearer_token: Some(token.to_owned()), ..self }
    }
}

fn address(base: &str, scheme: &str) -> SocketAddr {
    let address = base.strip_prefix(scheme).unwrap_or_else(|| panic!("{base} does not start with {scheme}"));
    address.parse().unwrap_or_else(|_| panic!("{base}: not an IP address and port"))
}

/// A TLS client configuration that trusts `ca_pem` and offers HTTP/2.
pub fn http2_tls(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    crate::net::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM")).expect("CA certificate");
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

pub struct LoadResult {
    pub sent: u64,
    pub errors: u64,
    /// Sorted.
    pub latencies_us: Vec<u64>,
    /// How late each request left the generator (from its due time to its
    /// send), sorted: the generator's own stalls, which the latencies
    /// include. A tail here is the generator's or the host's, not the
    /// server's.
    pub sent_late_us: Vec<u64>,
    /// Requests answered later than [`SLOW`], by the second of the run
    /// they were due in: when a tail happened (a stall, a renewal).
    pub slow_per_second: Vec<u32>,
    pub elapsed: Duration,
}

/// The latency [`LoadResult::slow_per_second`] counts requests above.
pub const SLOW: Duration = Duration::from_millis(1);

impl LoadResult {
    /// Latency percentile in ms.
    pub fn percentile(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }

    /// Percentile of how late requests were sent, in ms.
    pub fn sent_late(&self, p: f64) -> f64 {
        percentile_ms(&self.sent_late_us, p)
    }

    /// Successful requests per second.
    pub fn achieved(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }
}

fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    super::measure::nearest_rank(sorted_us, p) as f64 / 1000.0
}

/// Open-loop load: request `i` is due at `start + i / rate`, and its
/// latency runs from then, not from when it was actually sent, so a stall
/// of the server or of the generator is not hidden. `path(stream)` is the
/// path and query for one synthetic stream; streams are visited in a
/// scattered order so that no cache of recent answers helps. A request
/// succeeds when it answers 200 and its body arrives.
pub async fn run<P>(target: Target, streams: usize, rate: u64, seconds: u64, path: P) -> LoadResult
where
    P: Fn(usize) -> String + Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("load".to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("load runtime");
            let local = tokio::task::LocalSet::new();
            let _ = done.send(local.block_on(&runtime, generate(target, streams, rate, seconds, path)));
        })
        .expect("start the load thread");
    result.await.expect("the load thread failed")
}

#[derive(Default)]
struct Outcomes {
    errors: u64,
    latencies_us: Vec<u64>,
    sent_late_us: Vec<u64>,
    slow_per_second: Vec<u32>,
}

impl Outcomes {
    /// Requests finished, successfully or not.
    fn count(&self) -> u64 {
        self.errors + self.latencies_us.len() as u64
    }
}

async fn generate<P: Fn(usize) -> String>(target: Target, streams: usize, rate: u64, seconds: u64, path: P) -> LoadResult {
    let total = rate * seconds;
    let connections = Rc::new(Connections::open(&target).await);
    let outcomes = Rc::new(RefCell::new(Outcomes {
        errors: 0,
        latencies_us: Vec::with_capacity(total as usize),
        sent_late_us: Vec::with_capacity(total as usize),
        slow_per_second: vec![0; seconds as usize],
    }));
    // Each finished request says so here. Tasks are not joined one by one:
    // a finished task held by its handle until the end kept ~85 MB of
    // completed futures alive per run, paid for in page faults.
    let finished = Rc::new(tokio::sync::Notify::new());
    let mut pacer = Pacer::start(rate).expect("timerfd");
    let mut next = 0;
    while next < total {
        let due_by_now = pacer.due_by_now().await.expect("read the timerfd").min(total);
        for i in next..due_by_now {
            let due = pacer.due(i);
            let request = connections.request(&path((i as usize * 7919) % streams), target.bearer_token.as_deref());
            let (connections, outcomes, finished) = (connections.clone(), outcomes.clone(), finished.clone());
            tokio::task::spawn_local(async move {
                let sent_late = due.elapsed().as_micros() as u64;
                let ok = connections.send(request).await;
                let latency = due.elapsed();
                let mut outcomes = outcomes.borrow_mut();
                outcomes.sent_late_us.push(sent_late);
                match ok {
                    true => outcomes.latencies_us.push(latency.as_micros() as u64),
                    false => outcomes.errors += 1,
                }
                if ok && latency > SLOW {
                    let second = (i / rate) as usize;
                    if let Some(count) = outcomes.slow_per_second.get_mut(second) {
                        *count += 1;
                    }
                }
                finished.notify_one();
            });
        }
        next = due_by_now;
    }
    while outcomes.borrow().count() < total {
        finished.notified().await;
    }
    let Outcomes { errors, mut latencies_us, mut sent_late_us, slow_per_second } = std::mem::take(&mut *outcomes.borrow_mut());
    latencies_us.sort_unstable();
    sent_late_us.sort_unstable();
    LoadResult { sent: total, errors, latencies_us, sent_late_us, slow_per_second, elapsed: pacer.start.elapsed() }
}

/// A periodic timerfd: it expires every `1 / rate` from `start` on, and a
/// read returns how many periods passed since the last one, so sends that
/// fall behind catch up instead of being lost.
struct Pacer {
    timer: AsyncFd<OwnedFd>,
    start: Instant,
    period: Duration,
    expired: u64,
}

impl Pacer {
    /// The first request is due 50 ms from now.
    fn start(rate: u64) -> std::io::Result<Self> {
        const FIRST_DUE: Duration = Duration::from_millis(50);
        // SAFETY: timerfd_create has no memory arguments; a non-negative
        // result is a new descriptor that only this OwnedFd owns.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is the new descriptor just created, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let period = Duration::from_nanos(1_000_000_000 / rate);
        let timespec = |d: Duration| libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos().into() };
        let spec = libc::itimerspec { it_interval: timespec(period), it_value: timespec(FIRST_DUE) };
        let start = Instant::now() + FIRST_DUE;
        // SAFETY: `spec` outlives the call; the old value is not asked for.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns the descriptor; nothing else closes or replaces it.
        let timer = unsafe { AsyncFd::register(fd) }?;
        Ok(Pacer { timer, start, period, expired: 0 })
    }

    /// Waits for the timer; returns how many requests are due by now.
    async fn due_by_now(&mut self) -> std::io::Result<u64> {
        loop {
            let mut ready = self.timer.readable().await?;
            let read = ready.try_io(|fd| {
                let mut expirations = 0u64;
                // SAFETY: reads 8 bytes into a local u64, as timerfd requires.
                let n = unsafe { libc::read(fd.as_raw_fd(), (&raw mut expirations).cast(), 8) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(expirations)
                }
            });
            if let Ok(expirations) = read {
                self.expired += expirations?;
                return Ok(self.expired);
            }
        }
    }

    fn due(&self, request: u64) -> Instant {
        self.start + Duration::from_nanos(self.period.as_nanos() as u64 * request)
    }
}

/// The connections a load sends its requests on.
enum Connections {
    Http2 { sender: http2::SendRequest<Empty<Bytes>>, authority: String },
    Http1 { address: SocketAddr, idle: RefCell<Vec<http1::SendRequest<Empty<Bytes>>>>, slots: tokio::sync::Semaphore },
}

impl Connections {
    /// HTTP/2 connects (and handshakes) now, HTTP/1.1 connections open as
    /// requests need them.
    async fn open(target: &Target) -> Self {
        match &target.protocol {
            Protocol::Http2Tls(tls) => {
                let tcp = connect(target.address).await.expect("connect");
                let name = rustls::pki_types::ServerName::from(target.address.ip());
                let tls = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await.expect("TLS handshake");
                let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("HTTP/2 handshake");
                tokio::task::spawn_local(connection);
                Connections::Http2 { sender, authority: target.address.to_string() }
            }
            Protocol::Http1 { connections } => Connections::Http1 {
                address: target.address,
                idle: RefCell::new(Vec::new()),
                slots: tokio::sync::Semaphore::new(*connections),
            },
        }
    }

    fn request(&self, path: &str, bearer_token: Option<&str>) -> Request<Empty<Bytes>> {
        let request = match self {
            Connections::Http2 { authority, .. } => Request::get(format!("https://{authority}{path}")),
            Connections::Http1 { address, .. } => Request::get(path).header(hyper::header::HOST, address.to_string()),
        };
        let request = match bearer_token {
            Some(token) => request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}")),
            None => request,
        };
        request.body(Empty::new()).expect("request")
    }

    /// Whether the request was answered 200 with a whole body.
    async fn send(&self, request: Request<Empty<Bytes>>) -> bool {
        match self {
            Connections::Http2 { sender, .. } => answered(sender.clone().send_request(request).await).await,
            Connections::Http1 { address, idle, slots } => {
                let Ok(_slot) = slots.acquire().await else { return false };
                let reused = idle.borrow_mut().pop();
                let mut sender = match reused {
                    Some(sender) => sender,
                    None => match http1_connection(*address).await {
                        Some(sender) => sender,
                        None => return false,
                    },
                };
                if sender.ready().await.is_err() {
                    return false;
                }
                let ok = answered(sender.send_request(request).await).await;
                if ok {
                    idle.borrow_mut().push(sender);
                }
                ok
            }
        }
    }
}

async fn answered(response: hyper::Result<hyper::Response<hyper::body::Incoming>>) -> bool {
    match response {
        Ok(response) if response.status() == 200 => response.into_body().collect().await.is_ok(),
        _ => false,
    }
}

async fn connect(address: SocketAddr) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect(address).await?;
    // Requests are small frames: do not let Nagle hold them back.
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

async fn http1_connection(address: SocketAddr) -> Option<http1::SendRequest<Empty<Bytes>>> {
    let tcp = connect(address).await.ok()?;
    let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await.ok()?;
    tokio::task::spawn_local(connection);
    Some(sender)
}
