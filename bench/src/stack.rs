//! What the benchmarks need from the local stack: its settings (from `scripts/stack env`), a
//! PostgreSQL connection with the extension ready, the N given on the command line, and the
//! worker's memory.

use postgres::{Client, NoTls};

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/bench"))
}

/// The first command-line argument as a count, or `default`.
#[allow(dead_code)] // not every program takes a count
pub fn count_arg(default: i64) -> i64 {
    std::env::args().nth(1).map(|a| a.parse().expect("N must be a number")).unwrap_or(default)
}

/// A connection to the stack's database with the extension created and the original extension's broker row.
pub fn connect() -> Client {
    let conf = format!(
        "host={} port={} user={} dbname={}",
        env("PGHOST"),
        env("PGPORT"),
        env("PGUSER"),
        env("PGDATABASE")
    );
    let mut pg = Client::connect(&conf, NoTls).expect("connect to PostgreSQL");
    pg.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS kafka;
         INSERT INTO kafka.broker VALUES ('localhost', 9092) ON CONFLICT DO NOTHING;",
    )
    .unwrap();
    pg
}

/// A process's private resident memory (RssAnon), in kB; 0 if it is gone.
#[allow(dead_code)] // not every benchmark samples memory
pub fn rss_anon_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
