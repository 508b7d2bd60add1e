//! Several databases of one cluster: `kafka.database` as a list or `'*'`, one worker each,
//! databases created, renamed, dropped and copied while their workers run (and by whom), a
//! worker limit reached, and each database's status and order its own.

use pg_kafka_e2e::*;
use postgres::Client;
use std::time::{Duration, Instant};

/// Sets `kafka.database` (reset when the returned guard is dropped, even if the test fails).
fn serve_databases(spec: &str) -> ServeDefault {
    let mut c = pg();
    c.batch_execute(&format!("ALTER SYSTEM SET kafka.database = '{spec}'")).unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(&format!("kafka.database = {spec} in new sessions"), || {
        let r = connect_to("postgres").query_one("SELECT current_setting('kafka.database')", &[]).unwrap();
        r.get::<_, String>(0) == spec
    });
    ServeDefault
}

/// The rows of `kafka.databases` as (database, worker running, last error).
fn databases(c: &mut Client) -> Vec<(String, bool, Option<String>)> {
    c.query("SELECT database, worker_running, last_error FROM kafka.databases ORDER BY database", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The pids of the pg_kafka workers connected to `database`.
fn workers_of(c: &mut Client, database: &str) -> Vec<i32> {
    c.query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_kafka' AND datname = $1", &[&database])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn broker(c: &mut Client) {
    c.batch_execute("INSERT INTO kafka.broker VALUES ('localhost', 9092) ON CONFLICT DO NOTHING").unwrap();
}

/// With `'*'`, a database created while the server runs is served within seconds of `CREATE
/// EXTENSION`, next to the usual one: each delivers its own messages, in its own order, with its
/// own worker and status; `kafka.databases` lists both from either; a database without the
/// extension keeps no worker.
#[test]
fn a_new_database_is_served_within_seconds_with_a_star() {
    let _serve = serve_databases("*");
    let mut c = pg();
    wait_until("the usual database to be served", || status(&mut c).running);
    let (_bare, _) = OtherDb::empty("e2e_dbs_bare");
    let (_db, mut a) = OtherDb::empty("e2e_dbs_new");
    let created = Instant::now();
    a.batch_execute("CREATE EXTENSION kafka").unwrap();
    broker(&mut a);
    wait_until("the new database's worker", || status(&mut a).running);
    let took = created.elapsed();
    assert!(took < Duration::from_secs(10), "served {took:?} after CREATE EXTENSION");

    let (pa, pc) = (status(&mut a).pid, status(&mut c).pid);
    assert_ne!(pa, pc, "one worker per database");
    assert_eq!(workers_of(&mut c, "e2e_dbs_new"), vec![pa.unwrap()]);
    for client in [&mut a, &mut c] {
        let rows = databases(client);
        for db in ["postgres", "e2e_dbs_new"] {
            assert!(
                rows.iter().any(|(d, running, _)| d == db && *running),
                "{db} in kafka.databases: {rows:?}"
            );
        }
        assert!(!rows.iter().any(|(d, ..)| d == "e2e_dbs_bare"), "no extension, not listed: {rows:?}");
    }
    wait_until("no worker left in a database without the extension", || {
        workers_of(&mut c, "e2e_dbs_bare").is_empty()
    });

    // Both at once, several transactions each: each topic in its database's commit order.
    let (ta, tc) = (topic("dbs_new_a"), topic("dbs_new_c"));
    let n = 300;
    std::thread::scope(|s| {
        for (t, db) in [(&ta, "e2e_dbs_new"), (&tc, "postgres")] {
            s.spawn(move || {
                let mut k = connect_to(db);
                for i in 0..n {
                    k.execute("SELECT kafka.produce($1, $2)", &[t, &i.to_string()]).unwrap();
                }
            });
        }
    });
    for t in [&ta, &tc] {
        let got: Vec<String> = TopicReader::new(t).read_at_least(n).iter().filter_map(|r| r.text()).collect();
        assert_eq!(got, (0..n).map(|i| i.to_string()).collect::<Vec<_>>(), "{t} in commit order");
    }
    assert!(status(&mut a).last_error.is_none());
}

/// A served database can be renamed and dropped while its worker runs (no FORCE needed): the
/// worker lets go first. Renamed, it is served again under its new name with `'*'`, and no
/// longer when `kafka.database` lists the old name; dropped, it leaves no worker and no row.
#[test]
fn a_served_database_can_be_renamed_and_dropped_while_its_worker_runs() {
    let (_old, _) = OtherDb::empty("e2e_dbs_gone");
    let (_renamed, _) = OtherDb::empty("e2e_dbs_gone2");
    pg().batch_execute("DROP DATABASE e2e_dbs_gone2").unwrap();
    let mut c = pg();
    {
        let _serve = serve_databases("*");
        let mut o = connect_to("e2e_dbs_gone");
        o.batch_execute("CREATE EXTENSION kafka").unwrap();
        broker(&mut o);
        wait_until("the worker of e2e_dbs_gone", || status(&mut o).running);
        drop(o);
        c.batch_execute("ALTER DATABASE e2e_dbs_gone RENAME TO e2e_dbs_gone2").unwrap();
        let mut o = connect_to("e2e_dbs_gone2");
        wait_until("the worker of the renamed database", || status(&mut o).running);
        let t = topic("dbs_renamed");
        o.execute("SELECT kafka.produce($1, 'renamed')", &[&t]).unwrap();
        assert_eq!(TopicReader::new(&t).read_at_least(1)[0].text().as_deref(), Some("renamed"));
        drop(o);
        c.batch_execute("DROP DATABASE e2e_dbs_gone2").unwrap();
        wait_until("no row for the dropped database", || {
            !databases(&mut c).iter().any(|(d, ..)| d.starts_with("e2e_dbs_gone"))
        });
    }
    // Named: renamed out of the list, it is no longer served.
    let (_db, mut o) = OtherDb::new("e2e_dbs_named");
    broker(&mut o);
    let _serve = serve_databases("postgres, e2e_dbs_named");
    wait_until("the worker of e2e_dbs_named", || status(&mut o).running);
    drop(o);
    let (_x, _) = OtherDb::empty("e2e_dbs_named2");
    c.batch_execute("DROP DATABASE e2e_dbs_named2").unwrap();
    c.batch_execute("ALTER DATABASE e2e_dbs_named RENAME TO e2e_dbs_named2").unwrap();
    let mut o = connect_to("e2e_dbs_named2");
    let (state, hint) = error_of(&mut o, "SELECT kafka.produce('x', 'y')");
    assert_eq!(state, "55000");
    assert!(hint.unwrap().contains("kafka.database"));
    wait_until("no worker in the database renamed out of the list", || {
        workers_of(&mut c, "e2e_dbs_named2").is_empty()
    });
    assert!(status(&mut c).running, "the usual database is still served");
    drop(o);
    c.batch_execute("ALTER DATABASE e2e_dbs_named2 RENAME TO e2e_dbs_named").unwrap();
}

/// More served databases than worker slots: the launcher says so in a WARNING naming
/// max_worker_processes, `kafka.status` of a database without a worker says why, and once
/// slots are freed (databases dropped) every served database gets its worker.
#[test]
fn a_worker_limit_reached_is_said_and_lifted() {
    let mut c = pg();
    let max: i32 = c.query_one("SELECT current_setting('max_worker_processes')::int", &[]).unwrap().get(0);
    let log_from = std::fs::metadata(server_log()).unwrap().len() as usize;
    let mut dbs: Vec<(OtherDb, Client)> = (0..max)
        .map(|i| {
            let (db, mut o) = OtherDb::new(&format!("e2e_dbs_limit{i}"));
            broker(&mut o);
            (db, o)
        })
        .collect();
    let _serve = serve_databases("*");
    let unserved = |c: &mut Client| {
        databases(c)
            .into_iter()
            .filter(|(_, running, e)| {
                !running && e.as_deref().is_some_and(|e| e.contains("max_worker_processes"))
            })
            .count()
    };
    wait_until("a database said to wait for a worker slot", || unserved(&mut c) > 0);
    wait_until("the WARNING naming max_worker_processes", || {
        let log = std::fs::read_to_string(server_log()).unwrap()[log_from..].to_owned();
        log.contains("WARNING")
            && log.contains("is not served: no background worker slot is free: raise max_worker_processes")
    });
    let waiting = databases(&mut c).into_iter().find(|(_, running, _)| !running).unwrap().0;
    let why = status(&mut connect_to(&waiting)).last_error.unwrap_or_default();
    assert!(why.contains("max_worker_processes"), "kafka.status of {waiting} says why: {why}");
    // Free slots: every database left is served.
    dbs.truncate(2);
    for (_, o) in &mut dbs {
        wait_until("a worker for every database left", || status(o).running);
    }
    assert_eq!(unserved(&mut c), 0);
    assert!(status(&mut c).running);
}

/// A flood in one database does not hold another's messages back: a message committed in B
/// right after 300,000 in A is sent while A's are still being sent (by the records' times).
#[test]
fn a_flood_in_one_database_does_not_hold_back_another() {
    let (_db, mut b) = OtherDb::new("e2e_dbs_quiet");
    broker(&mut b);
    let _serve = serve_databases("postgres, e2e_dbs_quiet");
    let mut a = pg();
    wait_until("both workers", || status(&mut b).running && status(&mut a).running);
    let (ta, tb) = (topic("dbs_flood"), topic("dbs_quiet"));
    let n = 300_000;
    a.execute("SELECT kafka.produce($1, 'm' || i) FROM generate_series(1, $2) i", &[&ta, &(n as i32)])
        .unwrap();
    b.execute("SELECT kafka.produce($1, 'quiet')", &[&tb]).unwrap();
    let quiet = TopicReader::new(&tb).read_at_least(1)[0].clone();
    assert_eq!(quiet.text().as_deref(), Some("quiet"));
    let mut flood = TopicReader::new(&ta);
    let last = flood.read_at_least(n).last().unwrap().timestamp_ms.unwrap();
    assert!(
        quiet.timestamp_ms.unwrap() < last,
        "B's message was sent after A's flood ({} ms after its last): the flood held it back",
        quiet.timestamp_ms.unwrap() - last
    );
}

/// A role that may not drop, rename, move or copy the served database cannot make its worker
/// let go by trying: the worker that delivers afterwards is the one from before.
#[test]
fn a_role_that_may_not_drop_the_database_cannot_restart_its_worker() {
    let mut c = pg();
    wait_until("the worker", || status(&mut c).running);
    let before = status(&mut c).pid;
    c.batch_execute("DROP ROLE IF EXISTS e2e_dbs_intruder; CREATE ROLE e2e_dbs_intruder CREATEDB").unwrap();
    c.batch_execute("SET ROLE e2e_dbs_intruder").unwrap();
    for sql in [
        "DROP DATABASE postgres",
        "ALTER DATABASE postgres RENAME TO e2e_dbs_stolen",
        "ALTER DATABASE postgres SET TABLESPACE pg_global",
        "CREATE DATABASE e2e_dbs_copy TEMPLATE postgres",
    ] {
        assert!(c.batch_execute(sql).is_err(), "{sql} was refused");
    }
    c.batch_execute("RESET ROLE; DROP ROLE e2e_dbs_intruder").unwrap();
    let t = topic("dbs_intruder");
    c.execute("SELECT kafka.produce($1, 'after')", &[&t]).unwrap();
    assert_eq!(TopicReader::new(&t).read_at_least(1)[0].text().as_deref(), Some("after"));
    assert_eq!(status(&mut c).pid, before, "the worker was stopped and started again");
}

/// A served template (named in `kafka.database`) may be copied by any role with CREATEDB: its
/// worker lets go for the copy and comes back; a role without CREATEDB, refused, leaves it be.
#[test]
fn a_served_template_is_let_go_for_a_copy_by_who_may_copy_it() {
    let (_db, mut t) = OtherDb::new("e2e_dbs_tmpl");
    broker(&mut t);
    let (_copy, _) = OtherDb::empty("e2e_dbs_tmpl_copy");
    let mut c = pg();
    c.batch_execute("DROP DATABASE e2e_dbs_tmpl_copy").unwrap();
    let _serve = serve_databases("postgres, e2e_dbs_tmpl");
    wait_until("the template's worker", || status(&mut t).running);
    drop(t);
    c.batch_execute("ALTER DATABASE e2e_dbs_tmpl IS_TEMPLATE true").unwrap();
    let pid_of = |c: &mut Client| workers_of(c, "e2e_dbs_tmpl");
    let before = pid_of(&mut c);
    assert_eq!(before.len(), 1, "a named template is served");
    c.batch_execute("DROP ROLE IF EXISTS e2e_dbs_nocreate; CREATE ROLE e2e_dbs_nocreate").unwrap();
    c.batch_execute("SET ROLE e2e_dbs_nocreate").unwrap();
    assert!(c.batch_execute("CREATE DATABASE e2e_dbs_tmpl_copy TEMPLATE e2e_dbs_tmpl").is_err());
    c.batch_execute("RESET ROLE; DROP ROLE e2e_dbs_nocreate").unwrap();
    let mut t = connect_to("e2e_dbs_tmpl");
    let topic = topic("dbs_tmpl");
    t.execute("SELECT kafka.produce($1, 'still')", &[&topic]).unwrap();
    assert_eq!(TopicReader::new(&topic).read_at_least(1)[0].text().as_deref(), Some("still"));
    assert_eq!(pid_of(&mut c), before, "a refused copy made the worker let go");
    drop(t);
    c.batch_execute("DROP ROLE IF EXISTS e2e_dbs_creator; CREATE ROLE e2e_dbs_creator CREATEDB").unwrap();
    c.batch_execute("SET ROLE e2e_dbs_creator").unwrap();
    c.batch_execute("CREATE DATABASE e2e_dbs_tmpl_copy TEMPLATE e2e_dbs_tmpl").unwrap();
    c.batch_execute("RESET ROLE").unwrap();
    c.batch_execute("DROP DATABASE e2e_dbs_tmpl_copy").unwrap();
    c.batch_execute("DROP ROLE e2e_dbs_creator").unwrap();
    wait_until("the template served again", || pid_of(&mut c).len() == 1);
    assert_ne!(pid_of(&mut c), before, "the worker let go for the copy and came back");
    c.batch_execute("ALTER DATABASE e2e_dbs_tmpl IS_TEMPLATE false").unwrap();
}

/// `kafka.databases` shows every database's worker and errors: kafka_admin and pg_monitor read
/// it; a role with no grant and kafka_producer read neither it nor the function behind it.
#[test]
fn only_admins_and_monitors_see_every_database() {
    let mut c = pg();
    for grants in [&[][..], &["kafka_producer"][..]] {
        as_role(&mut c, "e2e_dbs_curious", grants, |c| {
            for sql in ["SELECT * FROM kafka.databases", "SELECT * FROM kafka_internal.databases()"] {
                assert_eq!(error_of(c, sql).0, "42501", "{sql} as {grants:?}");
            }
        });
    }
    for role in ["kafka_admin", "pg_monitor"] {
        as_role(&mut c, "e2e_dbs_watcher", &[role], |c| {
            let rows = databases(c);
            assert!(rows.iter().any(|(d, running, _)| d == "postgres" && *running), "{role}: {rows:?}");
        });
    }
}
