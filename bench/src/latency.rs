//! Latency benchmark: single-message autocommit transactions at a steady rate (200 per second
//! for 20 s by default), from COMMIT returned to a Kafka consumer holding the message.
//!
//! Baseline, in the same run: the same trickle sent by a plain producer built from pg_kafka's own
//! producer module and settings, from `send` to the same consumer holding the message. Prints
//! p50, p90, p99 and max of both, and the ratio of the p50s and p99s.
//!
//! With `wal`, also the events of a table captured with `method => 'wal'`: one-row INSERT
//! transactions at the same rate, from COMMIT returned to the consumer holding the event (the
//! worker decodes the WAL, stages the event in the outbox and delivers it).
//!
//! Run with `scripts/bench latency [SECONDS] [wal]`.

use kafka_core::producer;

mod stack;
mod trickle;

use std::time::{Instant, SystemTime, UNIX_EPOCH};
use trickle::{measure, show, RATE};

fn main() {
    let seconds = stack::count_arg(20) as u32;
    let n = (RATE * seconds) as usize;
    let servers = stack::env("KAFKA_BOOTSTRAP_SERVERS");
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    println!("latency: {n} single-message transactions at {RATE}/s, COMMIT returned -> consumer received");

    let plain_topic = format!("bench_latency_plain_{stamp}");
    let p = producer::Producer::new(&producer::base_config(&servers, 30_000)).expect("producer");
    let plain = measure(&servers, &plain_topic, n, |i| {
        let payload = i.to_string();
        let r =
            producer::Record { topic: &plain_topic, payload: Some(payload.as_bytes()), ..Default::default() };
        let sent = Instant::now();
        let out = p.deliver(std::slice::from_ref(&r), &mut || false);
        assert_eq!(out, vec![producer::Outcome::Delivered]);
        sent
    });

    let topic = format!("bench_latency_pg_kafka_{stamp}");
    let mut pg = stack::connect();
    let pg_kafka = measure(&servers, &topic, n, |i| {
        pg.execute("SELECT kafka.produce($1, $2)", &[&topic, &i.to_string()]).unwrap();
        Instant::now()
    });

    let wal = (std::env::args().nth(2).as_deref() == Some("wal")).then(|| {
        let topic = format!("bench_latency_wal_{stamp}");
        pg.batch_execute(
            "DROP TABLE IF EXISTS bench_latency_wal; CREATE TABLE bench_latency_wal (id bigint PRIMARY KEY)",
        )
        .unwrap();
        pg.execute("SELECT kafka.capture('bench_latency_wal', topic => $1, method => 'wal')", &[&topic])
            .unwrap();
        let l = measure(&servers, &topic, n, |i| {
            pg.execute("INSERT INTO bench_latency_wal VALUES ($1)", &[&(i as i64)]).unwrap();
            Instant::now()
        });
        pg.batch_execute("SELECT kafka.uncapture('bench_latency_wal'); DROP TABLE bench_latency_wal")
            .unwrap();
        l
    });

    show("pg_kafka (COMMIT -> consumer)", &pg_kafka);
    if let Some(wal) = &wal {
        show("WAL capture (COMMIT -> consumer)", wal);
    }
    show("plain producer (send -> consumer)", &plain);
    println!(
        "ratio pg_kafka / plain: p50 {:.2}, p99 {:.2}",
        trickle::quantile(&pg_kafka, 0.5) / trickle::quantile(&plain, 0.5),
        trickle::quantile(&pg_kafka, 0.99) / trickle::quantile(&plain, 0.99)
    );
}
