//! Privileges and secrets, with real roles: PUBLIC gets nothing that sends, kafka_producer may
//! produce, kafka_admin manages brokers, settings and dead letters, and no one but a superuser
//! reads a password back.

use pg_kafka_e2e::*;

#[test]
fn plain_user_is_refused_with_a_hint_naming_the_role() {
    let mut c = pg();
    as_role(&mut c, "e2e_plain", &[], |c| {
        for (sql, role) in [
            ("SELECT kafka.produce('t', 'm')", "kafka_producer"),
            ("SELECT kafka.publish('t', 'm')", "kafka_producer"),
            ("SELECT kafka.autonomous_publish('t', 'm')", "kafka_producer"),
            ("INSERT INTO kafka.broker VALUES ('evil.example', 9092)", "kafka_admin"),
        ] {
            let (state, hint) = error_of(c, sql);
            assert_eq!(state, "42501", "{sql}");
            assert!(hint.as_deref().is_some_and(|h| h.contains(role)), "{sql}: {hint:?}");
        }
    });
    let public: bool = c
        .query_one(
            "SELECT bool_or(has_function_privilege('public', p.oid, 'EXECUTE'))
               FROM pg_proc p WHERE p.pronamespace = 'kafka'::regnamespace",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!public, "PUBLIC can execute nothing in schema kafka");
}

#[test]
fn producer_role_produces_and_cannot_administer() {
    let mut c = pg();
    let t = topic("producer_role");
    as_role(&mut c, "e2e_prod", &["kafka_producer"], |c| {
        c.execute("SELECT kafka.publish($1, 'from kafka_producer', key => 'k')", &[&t]).unwrap();
        c.execute("SELECT kafka.produce($1, 'original api too')", &[&t]).unwrap();
        let (state, hint) = error_of(c, "DELETE FROM kafka.broker");
        assert_eq!(state, "42501");
        assert!(hint.unwrap().contains("kafka_admin"));
        assert_eq!(error_of(c, "SELECT * FROM kafka.outbox").0, "42501");
    });
    let mut r = TopicReader::new(&t);
    let got: Vec<String> = r.read_at_least(2).iter().map(|m| m.text().unwrap()).collect();
    assert_eq!(got, ["from kafka_producer", "original api too"]);
}

#[test]
fn admin_role_manages_but_cannot_produce_or_read_secrets() {
    let mut c = pg();
    c.batch_execute("DELETE FROM kafka.config WHERE name IN ('sasl.password', 'compression.type')").unwrap();
    // A superuser stores the secret; kafka_admin sees it masked.
    c.batch_execute("INSERT INTO kafka.config VALUES ('sasl.password', 'hunter2-secret')").unwrap();
    as_role(&mut c, "e2e_admin", &["kafka_admin"], |c| {
        c.batch_execute("INSERT INTO kafka.config VALUES ('compression.type', 'lz4')").unwrap();
        let rows = c.query("SELECT name, value FROM kafka.settings ORDER BY name", &[]).unwrap();
        let shown: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert!(shown.contains(&("compression.type".into(), "lz4".into())));
        assert!(shown.contains(&("sasl.password".into(), "********".into())));
        assert_eq!(error_of(c, "SELECT value FROM kafka.config").0, "42501");
        assert_eq!(error_of(c, "SELECT kafka.produce('t', 'm')").0, "42501");
        // Anything outside the allow-list is the superuser's, unknown names included.
        for sql in [
            "INSERT INTO kafka.config VALUES ('ssl.ca.location', '/etc/passwd')",
            "INSERT INTO kafka.config VALUES ('enable.ssl.certificate.verification', 'false')",
            "INSERT INTO kafka.config VALUES ('sasl.kerberos.kinit.cmd', 'touch /tmp/x')",
            "INSERT INTO kafka.config VALUES ('plugin.library.paths', 'evil.so')",
            "INSERT INTO kafka.config VALUES ('no.such.thing', '1')",
            "INSERT INTO kafka.config VALUES ('sasl.password', 'mine')",
        ] {
            let (state, hint) = error_of(c, sql);
            assert_eq!(state, "42501", "{sql}");
            assert!(hint.is_some(), "{sql}");
        }
        // Invalid values of allowed settings: librdkafka's own words.
        let e = c.batch_execute("INSERT INTO kafka.config VALUES ('linger.ms', 'soon')").unwrap_err();
        assert!(e.as_db_error().unwrap().message().contains("Invalid value"), "{e}");
        c.batch_execute("DELETE FROM kafka.config WHERE name = 'compression.type'").unwrap();
    });
    let e = c.batch_execute("INSERT INTO kafka.config VALUES ('no.such.thing', '1')").unwrap_err();
    assert!(e.as_db_error().unwrap().message().contains("No such configuration property"), "{e}");
    c.batch_execute("DELETE FROM kafka.config WHERE name = 'sasl.password'").unwrap();
    let log = std::fs::read_to_string(server_log()).unwrap();
    assert!(!log.contains("hunter2-secret"), "the password reached the server log");
}

/// W1, W2: every way a superuser may write a secret keeps it out of the server log, with
/// statements logged (log_statement = 'all', durations, bind parameters); and no role can hide
/// an ordinary statement from the log by mentioning kafka.config in it.
#[test]
fn secrets_stay_out_of_the_log_even_when_statements_are_logged() {
    let mut c = pg();
    c.batch_execute(
        "SET log_statement = 'all'; SET log_min_duration_statement = 0; DROP TABLE IF EXISTS w2_copy",
    )
    .unwrap();
    let run = topic("pa55"); // unique to this run: the log keeps earlier runs
    let secret = |i: usize| format!("{run}-in-the-log-{i}?");
    let ways = [
        format!("INSERT INTO kafka.config VALUES ('ssl.key.password', '{}')", secret(1)),
        format!("INSERT INTO kafka . config VALUES ('ssl.key.password', '{}')", secret(2)),
        format!("SET search_path = kafka, public; INSERT INTO config VALUES ('ssl.key.password', '{}')", secret(3)),
        format!("PREPARE w2 AS INSERT INTO kafka.config VALUES ('ssl.key.password', $1); EXECUTE w2('{}')", secret(4)),
        format!(
            "DO $$ BEGIN INSERT INTO kafka.config VALUES ('ssl.key.password', '{}'); END $$",
            secret(5)
        ),
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS w2_copy (name text, value text); TRUNCATE w2_copy; INSERT INTO w2_copy VALUES ('ssl.key.password', '{}');
             INSERT INTO kafka.config SELECT * FROM w2_copy",
            secret(6)
        ),
        format!("INSERT INTO kafka.config VALUES ('ssl.key.password', E'\\\\{}')", secret(8)),
    ];
    for sql in &ways {
        c.batch_execute(sql).unwrap();
        // The same again fails (duplicate key): the error report must not echo it either.
        let again =
            sql.replace("PREPARE w2 AS INSERT INTO kafka.config VALUES ('ssl.key.password', $1); ", "");
        let _ = c.batch_execute(&again);
        c.batch_execute(
            "DEALLOCATE ALL; DELETE FROM kafka.config WHERE name = 'ssl.key.password'; RESET search_path",
        )
        .unwrap();
    }
    // Bind parameters (extended protocol), succeeding and failing.
    let bound = secret(7);
    c.execute("INSERT INTO kafka.config VALUES ('ssl.key.password', $1)", &[&bound]).unwrap();
    let _ = c.execute("INSERT INTO kafka.config VALUES ('ssl.key.password', $1)", &[&bound]);
    c.batch_execute("DELETE FROM kafka.config WHERE name = 'ssl.key.password'").unwrap();
    // A statement that only mentions kafka.config is logged like any other, whoever runs it.
    as_role(&mut c, "e2e_w1", &[], |c| {
        c.batch_execute(&format!("SELECT '{run}-stays-visible' /* kafka.config */")).unwrap();
    });
    // A duration line is logged after the statement ran: a text that lexes differently by then
    // (standard_conforming_strings changed by a statement of the same string) is judged without
    // parsing it again, and the server keeps running.
    let started: std::time::SystemTime =
        c.query_one("SELECT pg_postmaster_start_time()", &[]).unwrap().get(0);
    c.batch_execute("BEGIN; SET standard_conforming_strings = off; SELECT '\\'").unwrap();
    c.batch_execute("ROLLBACK").unwrap();
    let again: std::time::SystemTime =
        pg().query_one("SELECT pg_postmaster_start_time()", &[]).unwrap().get(0);
    assert_eq!(started, again, "the server did not restart");
    c.batch_execute("RESET log_statement; RESET log_min_duration_statement").unwrap();
    let log = std::fs::read_to_string(server_log()).unwrap();
    for i in 1..=8 {
        assert!(!log.contains(&secret(i)), "way {i}: the password reached the server log");
    }
    assert!(log.contains(&format!("{run}-stays-visible")), "a statement was hidden by a comment");
    assert!(
        log.contains("a statement writing kafka.config"),
        "the statement was replaced, not dropped silently"
    );
}

#[test]
fn status_is_readable_by_pg_monitor() {
    let mut c = pg();
    as_role(&mut c, "e2e_monitor", &["pg_monitor"], |c| {
        let running: bool = c.query_one("SELECT worker_running FROM kafka.status", &[]).unwrap().get(0);
        assert!(running);
    });
}
