//! Which connections the secure port keeps when clients hold too many.
//!
//! A connection is unauthenticated until a request on it is authenticated:
//! before and after its TLS handshake, with or without a client
//! certificate, with no request yet. Unauthenticated connections share a
//! budget, and each source (an IPv4 address, an IPv6 /64) a smaller one.
//! A new connection over a budget, or over the cap on all connections, is
//! let in and an unauthenticated one is shed instead: the oldest of the
//! source holding the most, one without a completed handshake first. A
//! client that connects and authenticates, like the kube-apiserver's
//! aggregator, is then served however many connections others open and
//! hold; only when every connection is authenticated are new ones refused.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{oneshot, Notify};

/// How many connections may be open, and how many of them unauthenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub max_connections: usize,
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_source: usize,
}

/// The connections of one listener.
pub struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
    /// Notified whenever a connection closes.
    closed: Notify,
}

#[derive(Default)]
struct State {
    /// Connections open (shed ones until they are closed).
    open: usize,
    /// Shed connections not closed yet.
    closing: HashSet<u64>,
    /// Numbers connections in the order they are admitted.
    admitted: u64,
    unauthenticated: HashMap<u64, Unauthenticated>,
    /// The unauthenticated connections of each source, oldest first.
    by_source: HashMap<Source, BTreeSet<u64>>,
}

struct Unauthenticated {
    source: Source,
    handshake_done: bool,
    shed: oneshot::Sender<()>,
}

/// Where connections come from, as far as budgets go: one IPv4 address,
/// or one IPv6 /64 (what one host is usually given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Source {
    fn of(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Source::V6(prefix)
            }
        }
    }
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("all {0} connections are authenticated (--max-connections)")]
pub struct AllAuthenticated(pub usize);

/// An admitted connection's place; dropping it frees the place.
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    /// Resolves when the connection is shed.
    shed: oneshot::Receiver<()>,
}

/// What [`Admission::admit`] did to make room.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Made {
    /// Unauthenticated connections shed for the new one.
    pub shed: usize,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Admission { limits, state: Mutex::default(), closed: Notify::new() })
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// Lets a connection from `address` in, shedding unauthenticated ones
    /// to keep within the limits; refused only when every open connection
    /// is authenticated.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<(Ticket, Made), AllAuthenticated> {
        let source = Source::of(address);
        let mut state = self.lock();
        let mut made = Made::default();
        if state.by_source.get(&source).is_some_and(|ids| ids.len() >= self.limits.max_unauthenticated_per_source) {
            made.shed += usize::from(state.shed_from(source));
        }
        if state.unauthenticated.len() >= self.limits.max_unauthenticated || state.open - state.closing.len() >= self.limits.max_connections
        {
            match state.heaviest_source() {
                Some(heaviest) => made.shed += usize::from(state.shed_from(heaviest)),
                None => return Err(AllAuthenticated(self.limits.max_connections)),
            }
        }
        state.admitted += 1;
        state.open += 1;
        let id = state.admitted;
        let (shed, shed_signal) = oneshot::channel();
        state.unauthenticated.insert(id, Unauthenticated { source, handshake_done: false, shed });
        state.by_source.entry(source).or_default().insert(id);
        Ok((Ticket { admission: self.clone(), id, shed: shed_signal }, made))
    }

    /// Sheds one unauthenticated connection, to free a file descriptor;
    /// false if there is none.
    pub fn shed_one(&self) -> bool {
        let mut state = self.lock();
        state.heaviest_source().is_some_and(|source| state.shed_from(source))
    }

    /// Resolves once a connection can be admitted without holding more
    /// than `max_connections` descriptors: at once unless connections
    /// already shed to make room are still closing.
    pub async fn room(&self) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.has_room() {
                return;
            }
            closed.await;
        }
    }

    fn has_room(&self) -> bool {
        let state = self.lock();
        state.closing.is_empty() || state.open < self.limits.max_connections
    }

    /// Resolves when the next connection closes.
    pub async fn closed(&self) {
        self.closed.notified().await;
    }

    /// Open connections, and how many of them are unauthenticated.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.open, state.unauthenticated.len())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The source holding the most unauthenticated connections; of several,
    /// the one holding the oldest.
    fn heaviest_source(&self) -> Option<Source> {
        let weight = |ids: &BTreeSet<u64>| (ids.len(), std::cmp::Reverse(ids.first().copied()));
        self.by_source.iter().max_by_key(|(_, ids)| weight(ids)).map(|(source, _)| *source)
    }

    /// Sheds the oldest unauthenticated connection of `source` that has
    /// not completed its handshake, else its oldest.
    fn shed_from(&mut self, source: Source) -> bool {
        let Some(ids) = self.by_source.get(&source) else { return false };
        let pending = ids.iter().find(|id| self.unauthenticated.get(id).is_some_and(|c| !c.handshake_done));
        let Some(&id) = pending.or_else(|| ids.first()) else { return false };
        if let Some(connection) = self.forget(id) {
            self.closing.insert(id);
            // The connection may be ending by itself: then nobody listens.
            let _ = connection.shed.send(());
        }
        true
    }

    /// Takes `id` out of the unauthenticated connections.
    fn forget(&mut self, id: u64) -> Option<Unauthenticated> {
        let connection = self.unauthenticated.remove(&id)?;
        if let Some(ids) = self.by_source.get_mut(&connection.source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&connection.source);
            }
        }
        Some(connection)
    }
}

impl Ticket {
    /// The connection completed its TLS handshake: it is shed after those
    /// of its source that have not.
    pub fn handshake_done(&self) {
        if let Some(connection) = self.admission.lock().unauthenticated.get_mut(&self.id) {
            connection.handshake_done = true;
        }
    }

    /// A request on the connection was authenticated: it is never shed.
    pub fn authenticated(&self) {
        self.admission.lock().forget(self.id);
    }

    /// Resolves when the connection is shed; never once it is authenticated.
    pub async fn shed(&mut self) {
        if (&mut self.shed).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        state.open -= 1;
        state.closing.remove(&self.id);
        state.forget(self.id);
        drop(state);
        self.admission.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn limits(max_connections: usize, max_unauthenticated: usize, max_unauthenticated_per_source: usize) -> AdmissionLimits {
        AdmissionLimits { max_connections, max_unauthenticated, max_unauthenticated_per_source }
    }

    fn address(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn is_shed(ticket: &mut Ticket) -> bool {
        let shed = pin!(ticket.shed());
        shed.poll(&mut Context::from_waker(Waker::noop())) == Poll::Ready(())
    }

    #[test]
    fn a_source_over_its_budget_sheds_its_own_oldest_connection_first_among_those_without_a_handshake() {
        let admission = Admission::new(limits(100, 100, 3));
        let mut mine: Vec<Ticket> = (0..3).map(|_| admission.admit(address("10.0.0.1")).unwrap().0).collect();
        let (mut other, _) = admission.admit(address("10.0.0.2")).unwrap();
        mine[0].handshake_done();
        let (_newest, made) = admission.admit(address("10.0.0.1")).unwrap();
        assert_eq!(made.shed, 1);
        let shed: Vec<bool> = mine.iter_mut().map(is_shed).collect();
        assert_eq!(shed, [false, true, false], "the oldest without a handshake");
        assert!(!is_shed(&mut other));
        assert_eq!(admission.counts(), (5, 4), "a shed connection is open until it closes");
    }

    #[test]
    fn over_the_budget_the_source_holding_the_most_is_shed_and_authenticated_connections_never() {
        let admission = Admission::new(limits(100, 4, 10));
        let (mut lone, _) = admission.admit(address("10.0.0.9")).unwrap();
        let (mut trusted, _) = admission.admit(address("10.0.0.9")).unwrap();
        trusted.authenticated();
        let mut crowd: Vec<Ticket> = (0..3).map(|_| admission.admit(address("10.0.0.1")).unwrap().0).collect();
        for _ in 0..5 {
            crowd.push(admission.admit(address("10.0.0.1")).unwrap().0);
        }
        assert!(!is_shed(&mut lone) && !is_shed(&mut trusted));
        assert_eq!(crowd.iter_mut().map(is_shed).filter(|&shed| shed).count(), 5);
        assert_eq!(admission.counts(), (10, 4));
    }

    #[test]
    fn ipv6_sources_are_slash_64s_and_mapped_ipv4_is_ipv4() {
        assert_eq!(Source::of(address("2001:db8:1:2::1")), Source::of(address("2001:db8:1:2:ffff::7")));
        assert_ne!(Source::of(address("2001:db8:1:2::1")), Source::of(address("2001:db8:1:3::1")));
        assert_eq!(Source::of(address("::ffff:10.0.0.1")), Source::of(address("10.0.0.1")));
    }

    #[test]
    fn at_the_cap_an_unauthenticated_connection_makes_room_and_only_authenticated_ones_refuse() {
        let admission = Admission::new(limits(2, 2, 2));
        let (first, _) = admission.admit(address("10.0.0.1")).unwrap();
        let (mut second, _) = admission.admit(address("10.0.0.2")).unwrap();
        first.authenticated();
        let (third, made) = admission.admit(address("10.0.0.3")).unwrap();
        assert_eq!(made.shed, 1);
        assert!(is_shed(&mut second));
        drop(second);
        third.authenticated();
        assert_eq!(admission.admit(address("10.0.0.4")).err(), Some(AllAuthenticated(2)));
        assert!(!admission.shed_one(), "nothing unauthenticated to shed");
        drop(first);
        assert!(admission.admit(address("10.0.0.4")).is_ok(), "a place is free once a connection closes");
    }
}
