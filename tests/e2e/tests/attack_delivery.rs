//! Issue 20, item 5: one record Kafka refuses for good must not make anybody else's messages
//! arrive twice. Whatever happens to one message of a chunk or a pack (refused for good, its
//! record batch refused), every message of another topic that Kafka acknowledged is recorded as
//! delivered and never sent again; what Kafka did not acknowledge is sent again, with its own
//! topic's later messages (so that they end in order). Each test acts as the attacker:
//! a role granted kafka_producer queues a record Kafka refuses (a timestamp ten years ahead:
//! Kafka refuses timestamps more than an hour ahead of its clock, InvalidTimestamp), and counts
//! what another role's topic received: each message exactly once (records and distinct values,
//! not a high watermark).

use pg_kafka_e2e::*;
use postgres::Client;
use std::collections::HashSet;

/// Holds delivery until dropped (no broker configured: committed messages wait in the outbox),
/// so that what the test queues is sent together, in the same chunks, once it is released. The
/// broker comes back even when the test fails half-way, in one change: each change of
/// `kafka.broker` makes the worker interrupt what it is sending and start a new producer.
struct Held;

impl Held {
    fn on(c: &mut Client) -> Held {
        c.batch_execute("DELETE FROM kafka.broker").unwrap();
        Held
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        pg(); // puts the broker row back
    }
}

fn numbered(prefix: &str, from: usize, to: usize) -> Vec<String> {
    (from..=to).map(|i| format!("{prefix}{i}")).collect()
}

/// Waits until no message of `topics` waits in the outbox any more and the poison record is
/// the one dead letter of `poison_topic`: every send the worker will ever make of them is
/// acknowledged, so a consumer reading to the end sees every copy.
fn wait_settled(c: &mut Client, topics: &[&str], poison_topic: &str) {
    wait_until("the outbox to drain and the poison record to be a dead letter", || {
        let waiting: i64 = c
            .query_one("SELECT count(*) FROM kafka.outbox WHERE topics && $1::text[]", &[&topics])
            .unwrap()
            .get(0);
        let dead: i64 = c
            .query_one("SELECT count(*) FROM kafka.dead_letter WHERE topic = $1", &[&poison_topic])
            .unwrap()
            .get(0);
        waiting == 0 && dead == 1
    });
    let error: String =
        c.query_one("SELECT error FROM kafka.dead_letter WHERE topic = $1", &[&poison_topic]).unwrap().get(0);
    assert!(error.contains("imestamp"), "the poison is dead-lettered for its timestamp: {error}");
}

/// Everything `topic` holds (read to its end, `isolation` level), checked to be `want`, each
/// exactly once; in that order too with `in_order`.
fn assert_once_each(topic: &str, isolation: &str, want: &[String], in_order: bool) {
    let got: Vec<String> = read_all(&bootstrap_servers(), topic, isolation, want.len(), PATIENCE)
        .into_iter()
        .map(|(_, r)| r.text().unwrap_or_default())
        .collect();
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{topic}: {} records for {} messages ({} distinct)",
        got.len(),
        want.len(),
        distinct.len()
    );
    assert_eq!(distinct.len(), want.len(), "{topic}: every message once");
    assert_eq!(distinct, want.iter().collect::<HashSet<_>>(), "{topic}: exactly the messages queued");
    if in_order {
        assert!(
            got == want,
            "{topic}: in order; first difference at {:?}",
            got.iter().zip(want).position(|(a, b)| a != b)
        );
    }
}

/// The reproduction: many messages, then the poison record, then another role's messages on
/// its own topic, all in flight together (chunk 1: the attacker's 20,000; chunk 2, read and sent
/// while chunk 1 is in flight: the poison and the victim's 5,000). Kafka acknowledged the
/// victim's messages; the worker kept them in the outbox behind the refused record and sent them
/// all again (10,000 records for 5,000 messages).
#[test]
fn a_refused_record_does_not_make_another_roles_messages_arrive_twice() {
    let mut c = pg();
    let attacker = topic("i20_attacker");
    let victim = topic("i20_victim");
    let held = Held::on(&mut c);
    as_role(&mut c, "e2e_i20_attacker", &["kafka_producer"], |c| {
        c.execute("SELECT kafka.produce($1, 'a' || i) FROM generate_series(1, 20000) i", &[&attacker])
            .unwrap();
        c.execute("SELECT kafka.publish($1, 'poison', ts => now() + interval '10 years')", &[&attacker])
            .unwrap();
    });
    as_role(&mut c, "e2e_i20_victim", &["kafka_producer"], |c| {
        for t in 0..10_i32 {
            let (from, to) = (t * 500 + 1, t * 500 + 500);
            c.execute(
                "SELECT kafka.produce($1, 'v' || i) FROM generate_series($2::int, $3::int) i",
                &[&victim, &from, &to],
            )
            .unwrap();
        }
    });
    drop(held);
    wait_settled(&mut c, &[&attacker, &victim], &attacker);
    assert_once_each(&victim, "read_uncommitted", &numbered("v", 1, 5000), true);
    assert_once_each(&attacker, "read_uncommitted", &numbered("a", 1, 20000), false);
}

/// Not in the reproduction: the refused record in the middle of a pack (one transaction's
/// outbox row of up to 512 messages), between messages to another topic that Kafka
/// acknowledged. The pack stayed whole, so those were sent again with the refused record's
/// neighbours. Now the pack keeps only what Kafka did not take and what must follow it on its
/// topic; the other topic's messages arrive once each, in order.
#[test]
fn a_refused_record_inside_a_pack_does_not_resend_the_packs_acknowledged_messages() {
    let mut c = pg();
    let other = topic("i20_pack_other");
    let own = topic("i20_pack_own");
    as_role(&mut c, "e2e_i20_pack", &["kafka_producer"], |c| {
        let mut tx = c.transaction().unwrap();
        let produce = "SELECT kafka.produce($1, $2::text || i) FROM generate_series($3::int, $4::int) i";
        tx.execute(produce, &[&other, &"x", &1_i32, &300_i32]).unwrap();
        tx.execute(produce, &[&own, &"y", &1_i32, &100_i32]).unwrap();
        tx.execute("SELECT kafka.publish($1, 'poison', ts => now() + interval '10 years')", &[&own]).unwrap();
        tx.execute(produce, &[&own, &"y", &101_i32, &200_i32]).unwrap();
        tx.execute(produce, &[&other, &"x", &301_i32, &600_i32]).unwrap();
        tx.commit().unwrap();
    });
    wait_settled(&mut c, &[&other, &own], &own);
    assert_once_each(&other, "read_uncommitted", &numbered("x", 1, 600), true);
    // The refused record's own topic: its neighbours (refused with it) and its later messages
    // are sent again after it, so that a consumer ends with them in their order.
    assert_each_ends_in_order(&own, &numbered("y", 1, 200));
}

/// Exactly once, a refused record aborts the Kafka transaction that carried it: nothing of it
/// is visible to a read_committed consumer, so the others, sent again without it, arrive once
/// each, in order. Found here: the pass that sends the suspects one at a time read only the
/// first chunk (the bad record was in a later one), and the transaction after an aborted one
/// failed for the skipped sequence numbers; both lost the suspects, and the queue stalled,
/// aborting again and again.
#[test]
fn exactly_once_a_refused_record_aborts_and_every_other_message_arrives_once() {
    let _mode = ExactlyOnce::on();
    let mut c = pg();
    let attacker = topic("i20_eos_attacker");
    let victim = topic("i20_eos_victim");
    let held = Held::on(&mut c);
    as_role(&mut c, "e2e_i20_eos_attacker", &["kafka_producer"], |c| {
        c.execute("SELECT kafka.produce($1, 'a' || i) FROM generate_series(1, 20000) i", &[&attacker])
            .unwrap();
        c.execute("SELECT kafka.publish($1, 'poison', ts => now() + interval '10 years')", &[&attacker])
            .unwrap();
    });
    as_role(&mut c, "e2e_i20_eos_victim", &["kafka_producer"], |c| {
        c.execute("SELECT kafka.produce($1, 'v' || i) FROM generate_series(1, 5000) i", &[&victim]).unwrap();
    });
    drop(held);
    wait_settled(&mut c, &[&attacker, &victim], &attacker);
    assert_once_each(&victim, "read_committed", &numbered("v", 1, 5000), true);
    assert_once_each(&attacker, "read_committed", &numbered("a", 1, 20000), true);
}

/// Everything `topic` holds is `want`, each at least once, and the last copies of each are in
/// `want`'s order (what a consumer that keeps the newest value per message ends with).
fn assert_each_ends_in_order(topic: &str, want: &[String]) {
    let got: Vec<String> = read_all(&bootstrap_servers(), topic, "read_uncommitted", want.len(), PATIENCE)
        .into_iter()
        .map(|(_, r)| r.text().unwrap_or_default())
        .collect();
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(distinct, want.iter().collect::<HashSet<_>>(), "{topic}: exactly the messages queued");
    let mut last: Vec<&String> = Vec::new();
    for (i, m) in got.iter().enumerate() {
        if !got[i + 1..].contains(m) {
            last.push(m);
        }
    }
    assert!(last.iter().copied().eq(want.iter()), "{topic}: the last copies are not in order: {last:?}");
}
