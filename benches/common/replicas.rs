//! A store holding three replicas' expositions of N streams, merged, as the
//! adapter holds them after a scrape round. Needs the bench's `exposition`
//! module.

use crate::exposition::exposition;
use pravega_metrics_adapter::parse::Scanner;
use pravega_metrics_adapter::store::Store;
use std::time::{Duration, SystemTime};

pub fn merged_store(streams: usize, now: SystemTime) -> Store {
    let store = Store::new(Duration::from_secs(30));
    for replica in 0..3 {
        let target = format!("replica-{replica}");
        let mut builder = store.builder(&target);
        let body = exposition(streams, replica);
        Scanner::scan_all(|n: &str| n.starts_with("pravega_controller_"), body.as_bytes(), |s| builder.push(s));
        store.publish(&target, builder.finish(), now);
    }
    store.remerge(now);
    store
}
