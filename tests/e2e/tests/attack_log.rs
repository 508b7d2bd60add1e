//! Issue 20, item 3: pg_kafka's log hook runs while a report is being written, where anything
//! that raises takes the whole server down. Statements whose text the server lexes differently
//! once a setting of the same string changed (Unicode escapes, backslashes, escape warnings)
//! are logged without a crash, in superusers' sessions (where the hook looks at statement
//! lines) and others'; a superuser's statement that may write kafka.config stays out of the log
//! while another role cannot hide a statement by naming `config`.

use pg_kafka_e2e::*;
use postgres::Client;

fn postmaster_start(c: &mut Client) -> String {
    c.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0)
}

#[test]
fn statements_the_hook_cannot_lex_are_logged_without_a_crash() {
    let mut c = pg();
    let started = postmaster_start(&mut c);
    let nonce = std::process::id();
    // Each string is one simple query, logged once before it runs (log_statement) and once
    // after (duration), when its own SET has changed how its text lexes, inside the transaction
    // it leaves open (as the reproduction does: no COMMIT; the loop rolls it back).
    let strings = [
        "BEGIN; SET standard_conforming_strings = off; SELECT U&'x' AS x".to_owned(),
        "BEGIN; SET standard_conforming_strings = off; SELECT U&\"x\" FROM (SELECT 1 AS x) s".to_owned(),
        "BEGIN; SET standard_conforming_strings = off; SELECT 'a\\'b' AS x".to_owned(),
        "BEGIN; SET escape_string_warning = on; SET standard_conforming_strings = off; SELECT 'a\\\\b'"
            .to_owned(),
        format!(
            "BEGIN; SET standard_conforming_strings = off; SELECT U&'\\0063onfig {nonce}' AS x"
        ),
        "SET standard_conforming_strings = off; PREPARE w20p AS SELECT U&'x'; EXECUTE w20p; DEALLOCATE w20p; \
         RESET standard_conforming_strings"
            .to_owned(),
    ];
    for settings in ["SET log_min_duration_statement = 0", "SET log_statement = 'all'"] {
        c.batch_execute(settings).unwrap();
        for s in &strings {
            // Some of them are refused by the server (that is not the point); it must survive.
            let _ = c.batch_execute(s);
            c.batch_execute("ROLLBACK; RESET standard_conforming_strings").unwrap();
        }
        // The same strings in a role's session that is no superuser.
        as_role(&mut c, "e2e_w20_log", &[], |c| {
            for s in &strings {
                let _ = c.batch_execute(s);
                c.batch_execute("ROLLBACK; RESET standard_conforming_strings").unwrap();
            }
        });
        c.batch_execute("RESET log_min_duration_statement; RESET log_statement").unwrap();
    }
    let mut fresh = pg();
    assert_eq!(postmaster_start(&mut fresh), started, "the server restarted");
    c.batch_execute("SELECT 1").unwrap();
}

#[test]
fn a_superusers_secret_stays_out_and_nobody_else_hides_a_statement() {
    let mut c = pg();
    let nonce = format!("{}_{}", std::process::id(), topic("w20"));
    c.batch_execute("SET log_statement = 'all'").unwrap();
    // Written the ways a statement line shows it: unqualified, Unicode-escaped, through EXECUTE.
    let secrets = [
        format!("INSERT INTO kafka.config VALUES ('sasl.password', 'w20-secret-a-{nonce}')"),
        format!("SET search_path = kafka, public; UPDATE config SET value = 'w20-secret-b-{nonce}' WHERE name = 'sasl.password'; RESET search_path"),
        format!("UPDATE kafka.U&\"\\0063onfig\" SET value = 'w20-secret-c-{nonce}' WHERE name = 'sasl.password'"),
        format!("PREPARE w20s(text) AS UPDATE kafka.config SET value = $1 WHERE name = 'sasl.password'; EXECUTE w20s('w20-secret-d-{nonce}'); DEALLOCATE w20s"),
    ];
    for s in &secrets {
        c.batch_execute(s).unwrap();
    }
    // A multi-row INSERT whose first row is invalid: the error line must not show the second.
    let multi = format!(
        "INSERT INTO kafka.config VALUES ('no.such.setting', 'x'), ('sasl.password', 'w20-secret-e-{nonce}')"
    );
    assert_eq!(error_of(&mut c, &multi).0, "22023");
    c.batch_execute("DELETE FROM kafka.config WHERE name = 'sasl.password'").unwrap();
    // A role that is no superuser, in the same session (SET ROLE): its statement naming
    // config is logged in full.
    as_role(&mut c, "e2e_w20_log2", &[], |c| {
        c.batch_execute(&format!("SELECT 'config w20-visible-{nonce}'")).unwrap();
    });
    c.batch_execute("RESET log_statement").unwrap();
    let log = std::fs::read_to_string(server_log()).unwrap();
    assert!(!log.contains(&format!("w20-secret-a-{nonce}")), "secret a in the log");
    assert!(!log.contains(&format!("w20-secret-b-{nonce}")), "secret b in the log");
    assert!(!log.contains(&format!("w20-secret-c-{nonce}")), "secret c in the log");
    assert!(!log.contains(&format!("w20-secret-d-{nonce}")), "secret d in the log");
    assert!(!log.contains(&format!("w20-secret-e-{nonce}")), "secret e in the log");
    assert!(log.contains(&format!("config w20-visible-{nonce}")), "another role's statement was hidden");
}
