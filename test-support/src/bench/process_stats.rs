//! What a process costs the machine, from /proc: memory, CPU time, the
//! time its threads waited for a core, and the time the hypervisor stole.

use std::time::Duration;

/// (VmRSS, VmHWM) in KiB.
pub fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU time of a process.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let field = |i: usize| after.split_whitespace().nth(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_secs_f64(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// CPU time the hypervisor gave to others while this machine's CPUs had
/// work (steal time, all CPUs together). On a shared virtual machine a
/// stolen slice stalls whatever thread it hits, so a run with steal has a
/// tail that says more about the host than about the server.
pub fn steal_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // "cpu  user nice system idle iowait irq softirq steal ...", in USER_HZ.
    let steal = stat.lines().next().and_then(|total| total.split_whitespace().nth(8)?.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis(steal * 10)
}

/// How long the Tokio worker threads of process `pid` (the threads that
/// serve requests) have been runnable but waiting for a core, summed
/// (Linux schedstat). A request arriving meanwhile waits as long; the
/// difference over a run shows how much of its tail is the scheduler's.
pub fn serving_threads_waiting(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Duration::ZERO };
    let waited_ns: u64 = tasks
        .flatten()
        .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.starts_with("tokio-rt-worker")))
        .filter_map(|task| {
            // "time on CPU, time waiting on a run queue, timeslices", in ns.
            std::fs::read_to_string(task.path().join("schedstat")).ok()?.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum();
    Duration::from_nanos(waited_ns)
}

/// The CPU a process spends per second over the next 10 s while nobody
/// queries it: the cost of its background scraping. Clock ticks make its
/// resolution 1 ms per s.
pub async fn idle_cpu_per_second(pid: u32) -> Duration {
    const WINDOW_SECONDS: u32 = 10;
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(WINDOW_SECONDS.into())).await;
    (cpu_time(pid) - before) / WINDOW_SECONDS
}
