//! Security issue 20, items 6 and 7, each run as the role that would try it.
//!
//! `kafka.max_backlog` bounds what a role can make the server store: the disk pg_kafka's queue
//! tables take (the outbox with its TOAST table and indexes, the commit order, the dead letters),
//! plus what the transaction holds unwritten, checked as it grows. A role once queued far more
//! than its limit in one transaction (checked once per transaction), across transactions of
//! large values during an outage (only the outbox's main fork was measured), and in dead letters
//! (not counted).
//!
//! `kafka.release()` is for a restored copy whose delivery is held; in the live database it
//! renumbered waiting messages (out of commit order, ids ×512 a call, those in flight sent
//! again).

use pg_kafka_e2e::*;
use postgres::{Client, NoTls};

/// A connection that leaves `kafka.broker` alone (`pg()` adds the usual broker back, which would
/// end an outage the test made).
fn conn() -> Client {
    Client::connect(&connect_string(), NoTls).unwrap_or_else(|e| panic!("cannot connect to PostgreSQL: {e}"))
}

/// The disk pg_kafka's queue takes, all forks, as PostgreSQL reports it.
fn queue_bytes(c: &mut Client) -> i64 {
    c.query_one(
        "SELECT pg_total_relation_size('kafka.outbox') + pg_total_relation_size('kafka.outbox_commit')
              + pg_total_relation_size('kafka.dead_letter')",
        &[],
    )
    .unwrap()
    .get(0)
}

fn dead_letter_bytes(c: &mut Client) -> i64 {
    c.query_one("SELECT pg_total_relation_size('kafka.dead_letter')", &[]).unwrap().get(0)
}

/// SQL for `kb` kB of bytes that do not compress (neither pg_kafka's lz4 nor TOAST's pglz shrinks
/// them), different for each value of `seed` (an SQL expression).
fn noise(seed: &str, kb: u32) -> String {
    format!(
        "(SELECT string_agg(sha256(int8send(({seed})::bigint * 1000000 + j)), ''::bytea)
            FROM generate_series(1, {}) j)",
        kb * 32
    )
}

/// Waits until nothing waits, then gives back the space of what was delivered, so that the
/// queue's size only grows with what the test writes.
fn settle(c: &mut Client) {
    wait_until("the queue to drain", || status(c).backlog == 0);
    c.batch_execute("VACUUM kafka.outbox, kafka.outbox_commit").unwrap();
}

/// The SQLSTATE of `sql`'s error (the statement must fail).
fn sqlstate_of(c: &mut Client, sql: &str) -> String {
    error_of(c, sql).0
}

/// A fresh role granted kafka_producer, on a connection of its own (a superuser's, then SET
/// ROLE), with `kafka.max_backlog` set for it by a superuser, per role and in this session (as a
/// login takes the role's setting). The role and what it owns are dropped at the end, even when
/// the test fails.
struct Attacker {
    name: &'static str,
    c: Client,
}

impl Attacker {
    fn new(name: &'static str, limit: i64) -> Attacker {
        let mut c = conn();
        c.batch_execute(&format!("DROP OWNED BY {name}")).ok(); // fails only if there is no such role
        c.batch_execute(&format!(
            "DROP ROLE IF EXISTS {name}; CREATE ROLE {name}; GRANT kafka_producer TO {name}"
        ))
        .unwrap();
        let mut a = Attacker { name, c };
        a.limit(limit);
        a
    }

    /// Sets the role's `kafka.max_backlog` to `bytes` (whole kB), as a superuser.
    fn limit(&mut self, bytes: i64) {
        let (name, kb) = (self.name, bytes / 1024);
        self.c
            .batch_execute(&format!(
                "RESET ROLE; ALTER ROLE {name} SET kafka.max_backlog = '{kb}kB';
                 SET kafka.max_backlog = '{kb}kB'; SET ROLE {name}"
            ))
            .unwrap();
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let name = self.name;
        let _ = self.c.batch_execute(&format!("RESET ROLE; DROP OWNED BY {name}; DROP ROLE {name}"));
    }
}

/// Stops delivery from the served database (its broker becomes a port nothing listens on) once
/// the worker has a producer; returns a reader of `t`, which holds the probe sent first.
fn hold_delivery(c: &mut Client, t: &str) -> TopicReader {
    c.execute("SELECT kafka.produce($1, 'probe')", &[&t]).unwrap();
    let mut r = TopicReader::new(t);
    r.read_at_least(1); // the worker has a producer
    make_broker_unreachable(c); // nothing listens: messages wait
    r
}

fn resume_delivery(c: &mut Client) {
    c.batch_execute("DELETE FROM kafka.broker; INSERT INTO kafka.broker VALUES ('localhost', 9092)").unwrap();
}

/// One transaction far above the limit is refused as it grows, before it writes much more than
/// the limit: in one statement (its messages buffered in memory) and in a loop of savepoints
/// (each writes its pack to the outbox as it is released).
#[test]
fn one_transaction_cannot_queue_past_the_limit() {
    const HEADROOM: i64 = 1 << 20;
    const MARGIN: i64 = 1 << 20;
    let mut c = pg();
    let t = topic("lim_one_txn");
    settle(&mut c);
    let before = queue_bytes(&mut c);
    let mut a = Attacker::new("e2e_lim_one_txn", before + HEADROOM);
    // 50 MB in one statement.
    let big = format!("SELECT kafka.publish('{t}', {}) FROM generate_series(1, 5000) i", noise("i", 10));
    let (state, hint) = error_of(&mut a.c, &big);
    assert_eq!(state, "53400", "one transaction of 50 MB under a limit of 1 MB more than the queue");
    assert!(hint.unwrap().contains("kafka.max_backlog"));
    let grown = queue_bytes(&mut c) - before;
    assert!(grown <= HEADROOM + MARGIN, "the refused transaction wrote {grown} bytes first");

    // 20 MB in savepoints: each subtransaction's pack is written when it is released.
    let before = queue_bytes(&mut c);
    a.limit(before + HEADROOM);
    let savepoints = format!(
        "DO $$ BEGIN
           FOR i IN 1..2000 LOOP
             BEGIN
               PERFORM kafka.publish('{t}', {});
             EXCEPTION WHEN division_by_zero THEN NULL;
             END;
           END LOOP;
         END $$",
        noise("i", 10)
    );
    assert_eq!(sqlstate_of(&mut a.c, &savepoints), "53400", "20 MB written through savepoints");
    let grown = queue_bytes(&mut c) - before;
    assert!(grown <= HEADROOM + MARGIN, "the refused transaction wrote {grown} bytes first");

    // Nothing of either reached Kafka; a small transaction under no limit still goes through.
    a.c.batch_execute("RESET ROLE; RESET kafka.max_backlog").unwrap();
    a.c.execute("SELECT kafka.produce($1, 'end')", &[&t]).unwrap();
    assert!(TopicReader::new(&t).texts_until("end").is_empty(), "the refused transactions sent nothing");
}

/// During an outage, transactions of one large value each (kept in the outbox's TOAST table, not
/// its main fork) are refused once the queue's disk passes the limit, not before.
#[test]
fn large_values_during_an_outage_stop_at_the_limit() {
    const HEADROOM: i64 = 2 << 20;
    const VALUE_KB: u32 = 256;
    let _back = BrokerBack;
    let mut c = pg();
    let t = topic("lim_outage");
    settle(&mut c);
    let mut r = hold_delivery(&mut c, &t);
    let before = queue_bytes(&mut c);
    let mut a = Attacker::new("e2e_lim_outage", before + HEADROOM);
    let mut accepted = 0;
    let mut refused = None;
    for i in 1..=40 {
        // 40 transactions of 256 kB: 10 MB, five times the headroom.
        let sql = format!("SELECT kafka.publish('{t}', {})", noise(&i.to_string(), VALUE_KB));
        match a.c.batch_execute(&sql) {
            Ok(()) => accepted += 1,
            Err(e) => {
                refused = Some(
                    e.as_db_error().map(|d| d.code().code().to_owned()).unwrap_or_else(|| e.to_string()),
                );
                break;
            }
        }
    }
    let grown = queue_bytes(&mut c) - before;
    assert_eq!(refused.as_deref(), Some("53400"), "{accepted} values of {VALUE_KB} kB queued, {grown} bytes");
    assert!(grown <= HEADROOM + (512 << 10), "the outbox grew {grown} bytes under a headroom of {HEADROOM}");
    let fit = HEADROOM / (i64::from(VALUE_KB) << 10);
    assert!(accepted >= fit - 2, "refused too early: {accepted} values of {VALUE_KB} kB accepted");
    let waiting: i64 = c
        .query_one("SELECT coalesce(sum(messages), 0)::int8 FROM kafka.outbox WHERE $1 = ANY(topics)", &[&t])
        .unwrap()
        .get(0);
    assert_eq!(waiting, accepted, "what was accepted waits, nothing of the refused transaction");
    resume_delivery(&mut c);
    assert_eq!(r.read_at_least(1 + accepted as usize).len(), 1 + accepted as usize);
    settle(&mut c);
}

/// Dead letters take disk too: once Kafka refused enough of them, the role may queue no more;
/// once they are purged (and their space given back), it may again.
#[test]
fn dead_letters_count_against_the_limit() {
    let mut c = pg();
    let t = topic("lim_dead");
    settle(&mut c);
    // No free space left inside kafka.dead_letter: the new dead letters grow it by their size.
    c.batch_execute("VACUUM FULL kafka.dead_letter").unwrap();
    let dead_before = dead_letter_bytes(&mut c);
    // Four values of 2 MB that do not compress: Kafka (librdkafka's message.max.bytes) refuses
    // them for good, and they move to kafka.dead_letter.
    c.execute(
        &format!("SELECT kafka.publish($1::text, {}) FROM generate_series(1, 4) i", noise("i", 2048)),
        &[&t],
    )
    .unwrap();
    wait_until("the dead letters", || {
        c.query_one("SELECT count(*) FROM kafka.dead_letter WHERE topic = $1", &[&t])
            .unwrap()
            .get::<_, i64>(0)
            == 4
    });
    settle(&mut c);
    let dead = dead_letter_bytes(&mut c) - dead_before;
    assert!(dead >= 8 << 20, "the dead letters take {dead} bytes");
    // The limit lies between the queue without these dead letters and with them.
    let limit = queue_bytes(&mut c) - dead / 2;
    let mut a = Attacker::new("e2e_lim_dead", limit);
    let small = format!("SELECT kafka.produce('{t}', 'small')");
    let (state, hint) = error_of(&mut a.c, &small);
    assert_eq!(state, "53400", "{dead} bytes of dead letters count against a limit {limit}");
    assert!(hint.unwrap().contains("kafka.max_backlog"));
    c.execute("SELECT kafka.purge_dead_letters(topic => $1)", &[&t]).unwrap();
    c.batch_execute("VACUUM FULL kafka.dead_letter").unwrap();
    assert!(queue_bytes(&mut c) < limit, "purged, the queue is under the limit");
    a.c.batch_execute(&small).unwrap();
    assert_eq!(TopicReader::new(&t).read_at_least(1)[0].text().as_deref(), Some("small"));
}

/// The waiting packs of `t` in the served database: (id, xid, csn), in id order.
fn packs_of(c: &mut Client, t: &str) -> Vec<(i64, String, i64)> {
    c.query(
        "SELECT o.id, o.xid::text, oc.csn FROM kafka.outbox o JOIN kafka.outbox_commit oc ON oc.xid = o.xid
          WHERE $1 = ANY(o.topics) ORDER BY o.id",
        &[&t],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// In the live database (the queue's home) release() is refused with 55000, for a superuser and
/// for kafka_admin alike; the waiting messages keep their ids and are delivered once, in commit
/// order, which here differs from id order.
#[test]
fn release_is_refused_in_the_live_database() {
    let _back = BrokerBack;
    let mut c = pg();
    let t = topic("lim_release_live");
    settle(&mut c);
    let mut r = hold_delivery(&mut c, &t);
    // The first id, committed second.
    let mut first = conn();
    let mut tx = first.transaction().unwrap();
    let id_a: i64 = tx.query_one("SELECT kafka.publish($1, 'a')", &[&t]).unwrap().get(0);
    let id_b: i64 = conn().query_one("SELECT kafka.publish($1, 'b')", &[&t]).unwrap().get(0);
    tx.commit().unwrap();
    assert!(id_a < id_b);
    let packs = packs_of(&mut c, &t);
    assert_eq!(packs.len(), 2);
    let home = |c: &mut Client| -> Vec<(u32, u32)> {
        c.query("SELECT database_oid, table_oid FROM kafka.home", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    let home_before = home(&mut c);
    assert_eq!(home_before.len(), 1, "the worker claimed this database");

    let (state, hint) = error_of(&mut c, "SELECT kafka.release()");
    assert_eq!(state, "55000");
    let hint = hint.unwrap();
    assert!(hint.contains("copy") && hint.contains("kafka.status"), "{hint}");
    as_role(&mut c, "e2e_lim_release_admin", &["kafka_admin"], |c| {
        assert_eq!(sqlstate_of(c, "SELECT kafka.release()"), "55000");
    });
    assert_eq!(packs_of(&mut c, &t), packs, "the waiting packs keep their ids and transactions");
    assert_eq!(home(&mut c), home_before);

    resume_delivery(&mut c);
    c.execute("SELECT kafka.produce($1, 'end')", &[&t]).unwrap();
    assert_eq!(r.texts_until("end"), ["probe", "b", "a"], "once each, in commit order");
    let next: i64 = c.query_one("SELECT kafka.publish($1, 'next')", &[&t]).unwrap().get(0);
    // Sessions cache 16 packs' ids each, so a later id may be below another session's: what a
    // release in the live database did was to multiply them (×512 per call).
    assert!(next < id_b + (1 << 24), "ids go on from where they were: {next} after {id_b}");
}

/// In a restored copy, whose delivery is held, release() works: the packs it was restored with
/// are renumbered in commit order just after the highest id, 512 apart (not ×512), new ids
/// follow them closely, and they are delivered once, in commit order. The copy is then the
/// queue's home: a second release() is refused.
#[test]
fn release_in_a_restored_copy_keeps_commit_order_and_small_ids() {
    let _default = ServeDefault;
    let (_src_db, mut src) = OtherDb::new("e2e_lim_src");
    let t = topic("lim_release_copy");
    // Nothing listens on port 1: what the original queues waits there.
    src.batch_execute("INSERT INTO kafka.broker VALUES ('localhost', 1)").unwrap();
    serve("e2e_lim_src");
    wait_until("the worker to claim the original as the queue's home", || {
        src.query_one("SELECT count(*) FROM kafka.home", &[]).unwrap().get::<_, i64>(0) == 1
    });
    // Commit order b, c (two packs), a; id order a, b, c.
    let mut first = connect_to("e2e_lim_src");
    let mut tx = first.transaction().unwrap();
    let id_a: i64 = tx.query_one("SELECT kafka.publish($1, 'a1')", &[&t]).unwrap().get(0);
    tx.execute("SELECT kafka.publish($1, 'a2')", &[&t]).unwrap();
    let id_b: i64 = src.query_one("SELECT kafka.publish($1, 'b1')", &[&t]).unwrap().get(0);
    let id_c: i64 = src
        .query_one("SELECT min(kafka.publish($1, 'c' || i)) FROM generate_series(1, 600) i", &[&t])
        .unwrap()
        .get(0);
    tx.commit().unwrap();
    assert!(id_a < id_b && id_b < id_c, "{id_a} {id_b} {id_c}");

    let dump = std::env::temp_dir().join(format!("pg_kafka_e2e_lim_{}.dump", std::process::id()));
    let dump = dump.to_str().unwrap().to_owned();
    run("pg_dump", &["-Fc", "-d", "e2e_lim_src", "-f", &dump]);
    let (_copy_db, mut copy) = OtherDb::empty("e2e_lim_copy");
    run("pg_restore", &["-d", "e2e_lim_copy", &dump]);
    std::fs::remove_file(&dump).unwrap();
    copy.batch_execute("UPDATE kafka.broker SET port = 9092").unwrap();
    serve("e2e_lim_copy");
    wait_until("the copy to say its queue is held", || {
        status(&mut copy).last_error.is_some_and(|e| e.contains("kafka.release()"))
    });
    let restored: Vec<(i64, i32)> = copy
        .query(
            "SELECT o.id, o.messages FROM kafka.outbox o JOIN kafka.outbox_commit oc ON oc.xid = o.xid
              ORDER BY oc.csn, o.id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let counts: Vec<i32> = restored.iter().map(|p| p.1).collect();
    assert_eq!(counts, [1, 512, 88, 2], "b, c's two packs, a: in commit order");
    let top = restored.iter().map(|p| p.0).max().unwrap();

    let mut tx = copy.transaction().unwrap();
    assert!(tx.query_one("SELECT kafka.release()", &[]).unwrap().get::<_, bool>(0));
    let released: Vec<(i64, i32, bool)> = tx
        .query("SELECT id, messages, xid = pg_current_xact_id() FROM kafka.outbox ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want: Vec<(i64, i32, bool)> =
        counts.iter().zip(1..).map(|(n, k)| (top + 512 * k, *n, true)).collect();
    assert_eq!(released, want, "renumbered in commit order after {top}, 512 apart, in this transaction");
    let after: i64 = tx.query_one("SELECT kafka.publish($1, 'after')", &[&t]).unwrap().get(0);
    let last = top + 512 * 4;
    assert!(after > last && after <= last + 16 * 512, "the next id {after} follows {last}");
    tx.commit().unwrap();

    let mut want: Vec<String> = vec!["b1".into()];
    want.extend((1..=600).map(|i| format!("c{i}")));
    want.extend(["a1".into(), "a2".into()]);
    assert_eq!(TopicReader::new(&t).texts_until("after"), want, "once each, in commit order");

    let (state, _) = error_of(&mut copy, "SELECT kafka.release()");
    assert_eq!(state, "55000", "released, the copy is the queue's home");
    let next: i64 = copy.query_one("SELECT kafka.publish($1, 'next')", &[&t]).unwrap().get(0);
    assert!(next > after && next <= after + 16 * 512, "ids go on: {next} after {after}");
    drop(src);
    drop(copy);
}
