//! Nothing committed is lost: Kafka outages longer than librdkafka's message timeout, a
//! PostgreSQL crash with a backlog, a killed worker, and messages Kafka will never take.

use pg_kafka_e2e::*;
use std::collections::BTreeSet;

/// Restores the setting and the broker even when the test fails half-way.
struct Restore;
impl Drop for Restore {
    fn drop(&mut self) {
        stack(&["up"]);
        let mut c = pg();
        c.batch_execute("ALTER SYSTEM RESET kafka.message_timeout").unwrap();
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
    }
}

/// `kafka.message_timeout = 1s` until the returned guard drops (which also brings Kafka back up).
fn with_message_timeout_of_1s() -> (Restore, postgres::Client) {
    let restore = Restore;
    let mut c = pg();
    c.batch_execute("ALTER SYSTEM SET kafka.message_timeout = '1s'").unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    (restore, c)
}

#[test]
fn kafka_outage_longer_than_message_timeout_loses_nothing() {
    let (_restore, mut c) = with_message_timeout_of_1s();
    let log_from = std::fs::metadata(server_log()).unwrap().len() as usize;
    let t = topic("outage");
    stack(&["down", "kafka"]);
    c.execute("SELECT kafka.produce($1, 'm' || i) FROM generate_series(1, 500) i", &[&t]).unwrap();
    wait_until("a delivery attempt to time out while Kafka is down", || {
        let s = status(&mut c);
        s.backlog >= 500 && s.last_error.is_some_and(|e| e.contains("timed out"))
    });
    let age: bool = c.query_one("SELECT oldest_age > interval '0' FROM kafka.status", &[]).unwrap().get(0);
    assert!(age, "status shows how old the waiting backlog is");
    stack(&["up", "kafka"]);
    let mut r = TopicReader::new(&t);
    let got: Vec<String> = r.read_at_least(500).iter().map(|m| m.text().unwrap()).collect();
    let want: Vec<String> = (1..=500).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    // The status clears once delivery works, and keeps the failure as the previous one; the log
    // has one line when delivery stopped and one when it resumed, not one per attempt.
    wait_until("the status to clear", || status(&mut c).last_error.is_none());
    let r = c.query_one("SELECT previous_error, failing_since FROM kafka.status", &[]).unwrap();
    assert!(r.get::<_, Option<String>>(0).is_some(), "the outage's last error is kept as the previous one");
    assert!(r.get::<_, Option<std::time::SystemTime>>(1).is_none());
    let recent: i64 = c
        .query_one(
            "SELECT count(*) FROM kafka.recent_errors WHERE error LIKE '%timed out%' AND attempts >= 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(recent >= 1, "kafka.recent_errors keeps the outage's failure with its times");
    let log = std::fs::read_to_string(server_log()).unwrap()[log_from..].to_owned();
    assert_eq!(log.matches("pg_kafka: delivery stopped").count(), 1, "{log}");
    assert!(log.contains("pg_kafka: delivery resumed after"), "{log}");
}

#[test]
fn postgres_crash_with_a_backlog_loses_nothing() {
    let _restore = Restore;
    let mut c = pg();
    let t = topic("crash");
    stack(&["down", "kafka"]);
    c.execute("SELECT kafka.produce($1, 'm' || i) FROM generate_series(1, 2000) i", &[&t]).unwrap();
    assert!(status(&mut c).backlog >= 2000);
    drop(c);
    stack(&["crash", "pg"]);
    stack(&["up", "pg"]);
    stack(&["up", "kafka"]);
    let mut r = TopicReader::new(&t);
    let got: BTreeSet<String> = r.read_at_least(2000).iter().map(|m| m.text().unwrap()).collect();
    let want: BTreeSet<String> = (1..=2000).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "every committed message arrives (duplicates are allowed after a crash)");
}

#[test]
fn killed_worker_is_restarted_and_delivers() {
    let mut c = pg();
    let old = status(&mut c).pid.expect("worker runs");
    c.execute("SELECT pg_terminate_backend($1)", &[&old]).unwrap();
    let t = topic("restart");
    c.execute("SELECT kafka.produce($1, 'after restart')", &[&t]).unwrap();
    wait_until("a new worker", || status(&mut c).pid.is_some_and(|p| p != old));
    assert_eq!(TopicReader::new(&t).read_at_least(1)[0].text().as_deref(), Some("after restart"));
}

#[test]
fn oversized_message_goes_to_dead_letter_and_the_queue_moves_on() {
    let mut c = pg();
    let t = topic("oversized");
    c.execute(
        "SELECT kafka.produce($1, x) FROM unnest(ARRAY['before', repeat('x', 2000000), 'after']) x",
        &[&t],
    )
    .unwrap();
    let mut r = TopicReader::new(&t);
    let got: Vec<String> = r.texts_until("after");
    assert_eq!(got, ["before"]);
    // "after" may arrive before the worker commits the dead letter of its own chunk.
    wait_until("the dead letter", || {
        c.query_one("SELECT count(*) FROM kafka.dead_letter WHERE topic = $1", &[&t])
            .unwrap()
            .get::<_, i64>(0)
            == 1
    });
    let row =
        c.query_one("SELECT length(payload), error FROM kafka.dead_letter WHERE topic = $1", &[&t]).unwrap();
    assert_eq!(row.get::<_, i32>(0), 2_000_000, "the payload is kept for inspection");
    assert!(row.get::<_, String>(1).contains("too large"), "{}", row.get::<_, String>(1));
    let dead: i64 = c.query_one("SELECT dead_letters FROM kafka.status", &[]).unwrap().get(0);
    assert!(dead >= 1);
}

#[test]
fn immediate_send_times_out_or_is_cancelled_while_kafka_is_down() {
    let _restore = Restore;
    let mut c = pg();
    let t = topic("immediate_down");
    stack(&["down", "kafka"]);
    let (state, hint) =
        error_of(&mut c, &format!("SELECT * FROM kafka.autonomous_publish('{t}', 'x', timeout => '1s')"));
    assert_eq!(state, "08000");
    assert!(hint.unwrap().contains("may still reach Kafka"));

    // A long wait is interruptible: cancel it from outside.
    let cancel = c.cancel_token();
    let waiting = std::thread::spawn(move || {
        let r = c.query_one("SELECT * FROM kafka.autonomous_publish('t', 'x', timeout => '1 hour')", &[]);
        r.unwrap_err().as_db_error().map(|e| e.code().code().to_owned())
    });
    let mut other = pg();
    wait_until("the call to wait for Kafka", || {
        other
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%timeout => ''1 hour''%' AND wait_event_type = 'Extension'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 1
    });
    cancel.cancel_query(postgres::NoTls).unwrap();
    assert_eq!(waiting.join().unwrap().as_deref(), Some("57014"), "canceled like any query");
}

/// A session logged in as `role`.
fn as_login(role: &str) -> postgres::Client {
    let user = std::env::var("PGUSER").unwrap();
    let conf = connect_string().replace(&format!("user={user}"), &format!("user={role}"));
    postgres::Client::connect(&conf, postgres::NoTls).unwrap()
}

/// W9: one role holds at most its share of the immediate-send slots: while its sends wait on a
/// Kafka that is down, its next one is refused (53400) but another role's still gets a slot.
#[test]
fn one_role_cannot_take_every_immediate_send_slot() {
    let _restore = Restore;
    let mut c = pg();
    c.batch_execute("DROP ROLE IF EXISTS e2e_w9; CREATE ROLE e2e_w9 LOGIN IN ROLE kafka_producer").unwrap();
    stack(&["down", "kafka"]);
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let mut w = as_login("e2e_w9");
                let r = w
                    .query_one("SELECT * FROM kafka.autonomous_publish('w9', 'x', timeout => '1 hour')", &[]);
                r.unwrap_err().as_db_error().map(|e| e.code().code().to_owned())
            })
        })
        .collect();
    let busy =
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%''w9'', ''x'', timeout => ''1 hour''%'
                AND wait_event_type = 'Extension'";
    wait_until("four sends of the role to wait", || c.query_one(busy, &[]).unwrap().get::<_, i64>(0) == 4);
    // The role's fifth send, also after SET ROLE to another role (issue 20: a share is the
    // login role's).
    let mut fifth = as_login("e2e_w9");
    for sql in ["SELECT 1", "SET ROLE kafka_producer"] {
        fifth.batch_execute(sql).unwrap();
        let (state, hint) =
            error_of(&mut fifth, "SELECT * FROM kafka.autonomous_publish('w9', 'x', timeout => '1s')");
        assert_eq!(state, "53400", "after {sql}");
        assert!(hint.unwrap().contains("kafka.publish()"));
    }
    let (state, _) = error_of(&mut c, "SELECT * FROM kafka.autonomous_publish('w9', 'x', timeout => '1s')");
    assert_eq!(state, "08000", "another role got a slot and waited for Kafka");
    c.execute(&busy.replace("count(*)", "count(pg_cancel_backend(pid))"), &[]).unwrap();
    for w in waiting {
        assert_eq!(w.join().unwrap().as_deref(), Some("57014"));
    }
    c.batch_execute("DROP ROLE e2e_w9").unwrap();
}

/// Kafka's process, paused and resumed with signals (a broker that stops answering).
fn signal_kafka(signal: &str) {
    let out = std::process::Command::new("pgrep").args(["-f", "kafka.Kafka"]).output().unwrap();
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        std::process::Command::new("kill").args([signal, pid]).status().unwrap();
    }
}

/// A drain interrupted every way at once — Kafka stops answering with chunks in flight, the
/// worker is killed with SIGKILL, PostgreSQL is stopped with `-m immediate`, Kafka restarts —
/// while sessions keep committing and rolling back: every committed message arrives, none of a
/// rolled-back transaction, and each session's messages keep their order (a crash may re-send a
/// run: the first and the last arrival of each message are both in order). Several rounds.
#[test]
fn interrupted_drains_lose_nothing_and_keep_order() {
    struct Resume;
    impl Drop for Resume {
        fn drop(&mut self) {
            signal_kafka("-CONT");
        }
    }
    let _restore = Restore;
    let _resume = Resume;
    const TXS: usize = 40;
    const EACH: usize = 2000;
    let kept = |i: usize| i % 7 != 3;
    for round in 0..3 {
        let t = topic(&format!("interrupted_{round}"));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sessions: Vec<_> = (0..3)
            .map(|s| {
                let (t, done) = (t.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut c = pg();
                    for i in 0..TXS {
                        let mut tx = c.transaction().unwrap();
                        tx.execute(
                            "SELECT kafka.produce($1, $2 || ':' || $3 || ':' || j) FROM generate_series(1, $4::int) j",
                            &[&t, &s.to_string(), &i.to_string(), &(EACH as i32)],
                        )
                        .unwrap();
                        if kept(i) {
                            tx.commit().unwrap();
                        } else {
                            tx.rollback().unwrap();
                        }
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let mut c = pg();
        wait_until("half of the transactions", || {
            done.load(std::sync::atomic::Ordering::Relaxed) >= 3 * TXS / 2
        });
        signal_kafka("-STOP");
        // Sessions never wait on Kafka: they finish while it is frozen with chunks in flight.
        sessions.into_iter().for_each(|h| h.join().unwrap());
        let worker = status(&mut c).pid.expect("the worker runs");
        drop(c);
        // Killing the worker with SIGKILL makes PostgreSQL restart every process (as a crash
        // of any backend does); then, or also, an immediate stop.
        if round != 1 {
            std::process::Command::new("kill").args(["-9", &worker.to_string()]).status().unwrap();
            wait_until("PostgreSQL to restart after the killed worker", || {
                postgres::Client::connect(&connect_string(), postgres::NoTls)
                    .ok()
                    .and_then(|mut c| c.query_one("SELECT worker_pid FROM kafka.status", &[]).ok())
                    .and_then(|r| r.get::<_, Option<i32>>(0))
                    .is_some_and(|p| p != worker)
            });
        }
        if round != 0 {
            stack(&["crash", "pg"]);
            stack(&["up", "pg"]);
        }
        signal_kafka("-CONT");
        stack(&["down", "kafka"]);
        stack(&["up", "kafka"]);

        let per_session = (0..TXS).filter(|&i| kept(i)).count() * EACH;
        let mut r = TopicReader::new(&t);
        let mut seen = std::collections::HashSet::new();
        let mut got = Vec::new();
        while seen.len() < 3 * per_session {
            let n = got.len() + 1;
            let m = r.read_at_least(n)[n - 1].text().unwrap();
            seen.insert(m.clone());
            got.push(m);
        }
        let parse = |m: &String| -> (usize, usize, usize) {
            let v: Vec<usize> = m.split(':').map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        };
        let got: Vec<(usize, usize, usize)> = got.iter().map(parse).collect();
        assert!(got.iter().all(|m| kept(m.1)), "round {round}: a rolled-back message arrived");
        for s in 0..3 {
            let mine: Vec<(usize, usize)> = got.iter().filter(|m| m.0 == s).map(|m| (m.1, m.2)).collect();
            let in_order = |ms: &mut dyn Iterator<Item = (usize, usize)>| {
                let mut seen = std::collections::HashSet::new();
                ms.filter(|m| seen.insert(*m)).collect::<Vec<_>>()
            };
            let first = in_order(&mut mine.iter().copied());
            let mut last = in_order(&mut mine.iter().rev().copied());
            last.reverse();
            assert_eq!(first.len(), per_session, "round {round}, session {s}: every committed message");
            assert!(
                first.windows(2).all(|w| w[0] < w[1]),
                "round {round}, session {s}: first arrivals in order"
            );
            assert!(
                last.windows(2).all(|w| w[0] < w[1]),
                "round {round}, session {s}: last arrivals in order"
            );
        }
    }
}

/// kafka_admin takes given waiting messages out of the queue into kafka.dead_letter: the pack
/// around them is split, the others keep their ids and their order and are delivered.
#[test]
fn an_admin_moves_waiting_messages_to_the_dead_letters() {
    let _back = BrokerBack;
    let mut c = pg();
    let t = topic("set_aside");
    c.execute("SELECT kafka.produce($1, 'probe')", &[&t]).unwrap();
    let mut r = TopicReader::new(&t);
    r.read_at_least(1); // the worker has a producer
    make_broker_unreachable(&mut c); // nothing listens: messages wait
    let mut tx = c.transaction().unwrap();
    let ids: Vec<i64> = (1..=5)
        .map(|i| tx.query_one("SELECT kafka.publish($1, $2)", &[&t, &format!("m{i}")]).unwrap().get(0))
        .collect();
    tx.commit().unwrap();
    let mut moved: i64 = 0;
    as_role(&mut c, "e2e_set_aside", &["kafka_admin"], |c| {
        let take = vec![ids[1], ids[3], 42];
        moved = c.query_one("SELECT kafka.dead_letter_waiting($1, 'stuck')", &[&take]).unwrap().get(0);
    });
    assert_eq!(moved, 2, "two of them were waiting");
    let dead: Vec<(i64, String, String)> = c
        .query("SELECT id, convert_from(payload, 'UTF8'), error FROM kafka.dead_letter WHERE topic = $1 ORDER BY id", &[&t])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        dead.iter().map(|d| (d.0, d.1.as_str())).collect::<Vec<_>>(),
        [(ids[1], "m2"), (ids[3], "m4")]
    );
    assert!(dead[0].2.contains("stuck") && dead[0].2.contains("e2e_set_aside"), "{}", dead[0].2);
    let still_waiting: bool = c
        .query_one("SELECT oldest_waiting_at IS NOT NULL FROM kafka.topics WHERE topic = $1", &[&t])
        .unwrap()
        .get(0);
    assert!(still_waiting, "the split packs still list their topic");
    c.batch_execute("UPDATE kafka.broker SET port = 9092").unwrap();
    let got = r.texts_until("m5");
    assert_eq!(got.iter().filter(|m| m.starts_with('m')).collect::<Vec<_>>(), ["m1", "m3"]);
    // The rest of the pack kept its ids: m5 can be moved no more, it was delivered.
    let again: i64 =
        c.query_one("SELECT kafka.dead_letter_waiting(ARRAY[$1::bigint])", &[&ids[4]]).unwrap().get(0);
    assert_eq!(again, 0);
}

/// While Kafka cannot be reached, kafka.topics shows per topic since when its oldest message
/// waits (a transaction writing two topics counts for both); once delivered, nothing waits.
#[test]
fn per_topic_oldest_waiting_while_kafka_is_unreachable() {
    let _back = BrokerBack;
    let mut c = pg();
    let (t1, t2, t3) = (topic("waiting_a"), topic("waiting_b"), topic("waiting_c"));
    c.execute("SELECT kafka.produce($1, 'probe')", &[&t1]).unwrap();
    let mut r1 = TopicReader::new(&t1);
    r1.read_at_least(1);
    make_broker_unreachable(&mut c); // nothing listens: messages wait
    let mut tx = c.transaction().unwrap();
    for (t, m) in [(&t1, "a1"), (&t2, "b1"), (&t1, "a2")] {
        tx.execute("SELECT kafka.publish($1, $2)", &[t, &m]).unwrap();
    }
    let first: std::time::SystemTime = tx.query_one("SELECT now()", &[]).unwrap().get(0);
    tx.commit().unwrap();
    let mut tx = c.transaction().unwrap();
    tx.execute("SELECT kafka.publish($1, 'c1')", &[&t3]).unwrap();
    let second: std::time::SystemTime = tx.query_one("SELECT now()", &[]).unwrap().get(0);
    tx.commit().unwrap();
    type Row = (Option<std::time::SystemTime>, bool, i64);
    let waiting = |c: &mut postgres::Client, t: &str| -> Option<Row> {
        c.query_opt(
            "SELECT oldest_waiting_at, oldest_age > interval '0', delivered FROM kafka.topics WHERE topic = $1",
            &[&t],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get::<_, Option<bool>>(1).unwrap_or(false), r.get(2)))
    };
    assert_eq!(waiting(&mut c, &t1), Some((Some(first), true, 1)), "one delivered, two waiting");
    assert_eq!(waiting(&mut c, &t2), Some((Some(first), true, 0)), "never delivered, waiting");
    assert_eq!(waiting(&mut c, &t3), Some((Some(second), true, 0)));
    c.batch_execute("UPDATE kafka.broker SET port = 9092").unwrap();
    assert_eq!(r1.texts_until("a2"), ["probe", "a1"]);
    wait_until("nothing waiting, every message counted", || {
        waiting(&mut c, &t1) == Some((None, false, 3))
            && waiting(&mut c, &t2) == Some((None, false, 1))
            && waiting(&mut c, &t3) == Some((None, false, 1))
    });
}

/// A producer that has failed to deliver for a minute (twice the message timeout, at least 60 s)
/// is replaced by a new one; once Kafka is back, everything arrives, in order.
#[test]
fn a_producer_failing_for_a_minute_is_replaced() {
    let (_restore, mut c) = with_message_timeout_of_1s();
    let t = topic("replaced");
    c.execute("SELECT kafka.produce($1, 'before')", &[&t]).unwrap();
    let mut r = TopicReader::new(&t);
    r.read_at_least(1); // a producer with the new timeout exists and delivers
    let log_from = std::fs::metadata(server_log()).unwrap().len() as usize;
    stack(&["down", "kafka"]);
    c.execute("SELECT kafka.produce($1, 'm' || i) FROM generate_series(1, 100) i", &[&t]).unwrap();
    // Replaced after 60 s of failures (plus at most one back-off): longer than wait_until's patience.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !std::fs::read_to_string(server_log()).unwrap()[log_from..].contains("replacing a Kafka producer") {
        assert!(std::time::Instant::now() < deadline, "the failing producer was not replaced");
        std::thread::sleep(std::time::Duration::from_millis(500)); // poll interval of a condition wait
    }
    stack(&["up", "kafka"]);
    let got: Vec<String> = r.read_at_least(101)[1..].iter().map(|m| m.text().unwrap()).collect();
    let want: Vec<String> = (1..=100).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
}
