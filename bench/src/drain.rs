//! The drain of a backlog, shared by the benchmarks that time one: N messages of 100 bytes
//! produced in one transaction, from COMMIT to the worker's count of them.

use postgres::Client;
use std::time::{Duration, Instant};

pub const PAYLOAD_BYTES: i32 = 100;

/// Messages the worker of `pg`'s database delivered or dead-lettered since it started.
pub fn delivered(pg: &mut Client) -> i64 {
    pg.query_one("SELECT delivered + dead_lettered FROM kafka.status", &[]).unwrap().get(0)
}

/// Waits until the worker's count reaches `target` (it restarts at 0 with a new worker).
pub fn wait_delivered(pg: &mut Client, target: i64, limit: Duration) {
    let started = Instant::now();
    while delivered(pg) < target {
        assert!(started.elapsed() < limit, "not delivered within {limit:?}");
        std::thread::sleep(Duration::from_millis(20)); // sampling period of the progress counter
    }
}

/// COMMIT of n messages in one transaction -> the worker counted them delivered.
pub fn drain(pg: &mut Client, topic: &str, n: i64) -> Duration {
    // Warm up: the topic exists and the producer (and its Kafka transactions) is ready.
    let warm = delivered(pg);
    pg.execute("SELECT kafka.produce($1, 'warm-up')", &[&topic]).unwrap();
    wait_delivered(pg, warm + 1, Duration::from_secs(60));
    let before = delivered(pg);
    pg.execute(
        "SELECT kafka.produce($1, repeat('x', $2)) FROM generate_series(1, $3::int)",
        &[&topic, &PAYLOAD_BYTES, &(n as i32)],
    )
    .unwrap();
    let started = Instant::now();
    wait_delivered(pg, before + n, Duration::from_secs(1800));
    started.elapsed()
}
