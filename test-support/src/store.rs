//! Expositions scraped into the adapter's store in process, as the scrape
//! pool lands them, without HTTP.

use crate::exposition::{many_streams, QUIET};
use pravega_metrics_adapter::clock::Moment;
use pravega_metrics_adapter::parse::Scanner;
use pravega_metrics_adapter::store::{SnapshotBuilder, Store};
use std::time::Duration;

/// Scans `body`'s `pravega_controller_*` families into `builder`.
pub fn scan(builder: &mut SnapshotBuilder, body: &str) {
    Scanner::scan_all(|name: &str| name.starts_with("pravega_controller_"), body.as_bytes(), |s| builder.push(s));
}

/// Scans `body` as a scrape of `target` at `now` and publishes it (not
/// merged yet: see [`Store::remerge`]).
pub fn publish(store: &Store, target: &str, body: &str, now: Moment) {
    let mut builder = store.builder(target);
    scan(&mut builder, body);
    store.publish(target, builder.finish(), now).unwrap();
}

/// A store holding three replicas' expositions of `streams` synthetic
/// streams ([`many_streams`]), merged, as the adapter holds them once it
/// has watched them appear (so the metrics vouch for their values).
pub fn merged_store(streams: usize, now: Moment) -> Store {
    let store = Store::new(Duration::from_secs(30));
    for replica in 0..3 {
        publish(&store, &format!("replica-{replica}"), QUIET, now);
    }
    store.remerge(now);
    for replica in 0..3 {
        publish(&store, &format!("replica-{replica}"), &many_streams(streams, replica), now);
    }
    store.remerge(now);
    store
}
