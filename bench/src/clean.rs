//! Deletes the topics the benchmarks wrote (`bench_…`, `bench.…`) once the worker has delivered
//! everything queued: a benchmark writes gigabytes (the capture benchmark alone ~4 GB a run), and
//! the local broker's retention only runs while it runs. `scripts/bench` calls it after each
//! benchmark.

mod stack;

use futures_executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::time::{Duration, Instant};

fn main() {
    let mut pg = stack::connect();
    // Deleting a topic the worker still sends to would let the broker create it again.
    let deadline = Instant::now() + Duration::from_secs(600);
    while pg.query_one("SELECT EXISTS (SELECT 1 FROM kafka.outbox)", &[]).unwrap().get::<_, bool>(0) {
        if Instant::now() > deadline {
            eprintln!("bench topics kept: the outbox did not drain within 10 min");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", stack::env("KAFKA_BOOTSTRAP_SERVERS"))
        .create()
        .expect("admin client");
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10)).expect("metadata");
    let topics: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|name| name.starts_with("bench_") || name.starts_with("bench."))
        .collect();
    if topics.is_empty() {
        return;
    }
    let results = block_on(admin.delete_topics(&topics, &AdminOptions::new())).expect("delete topics");
    let failed: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    if failed.is_empty() {
        println!("deleted the {} topics the benchmarks wrote", topics.len());
    } else {
        eprintln!("could not delete some benchmark topics: {failed:?}");
    }
}
