//! A SASL_SSL listener (SCRAM-SHA-512, a certificate from the stack's own CA): produce through it;
//! a wrong password or an untrusted CA shows in kafka.status while messages wait, and they are
//! delivered once kafka.config is fixed.

use pg_kafka_e2e::*;
use postgres::Client;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test"))
}

/// Points the worker at the secured listener; puts the plain one back afterwards.
struct Secured(Client);

impl Secured {
    fn new(password: &str, ca: &str) -> Secured {
        let mut c = pg();
        c.batch_execute("DELETE FROM kafka.broker; DELETE FROM kafka.config;").unwrap();
        c.execute(
            "INSERT INTO kafka.broker VALUES ('127.0.0.1', $1::text::int)",
            &[&env("KAFKA_SASL_SSL_PORT")],
        )
        .unwrap();
        let settings = [
            ("security.protocol", "SASL_SSL".to_owned()),
            ("sasl.mechanisms", "SCRAM-SHA-512".to_owned()),
            ("sasl.username", env("KAFKA_SCRAM_USER")),
            ("sasl.password", password.to_owned()),
            ("ssl.ca.location", ca.to_owned()),
        ];
        for (n, v) in settings {
            c.execute("INSERT INTO kafka.config VALUES ($1, $2)", &[&n, &v]).unwrap();
        }
        Secured(c)
    }

    fn set(&mut self, name: &str, value: &str) {
        self.0.execute("UPDATE kafka.config SET value = $2 WHERE name = $1", &[&name, &value]).unwrap();
    }

    fn wait_for_error(&mut self, what: &str, backlog: i64) {
        wait_until(&format!("kafka.status to show {what:?}"), || {
            let s = status(&mut self.0);
            s.backlog >= backlog && s.last_error.is_some_and(|e| e.contains(what))
        });
    }
}

impl Drop for Secured {
    fn drop(&mut self) {
        let mut c = pg();
        c.batch_execute("DELETE FROM kafka.config; DELETE FROM kafka.broker;").unwrap();
        c.batch_execute("INSERT INTO kafka.broker VALUES ('localhost', 9092)").unwrap();
    }
}

#[test]
fn produces_through_sasl_ssl_and_recovers_from_bad_credentials_and_untrusted_ca() {
    let t = topic("secured");
    // Right away: delivered through the secured listener.
    let mut s = Secured::new(&env("KAFKA_SCRAM_PASSWORD"), &env("KAFKA_CA"));
    s.0.execute("SELECT kafka.produce($1, 'over SASL_SSL')", &[&t]).unwrap();
    let mut r = TopicReader::new(&t);
    assert_eq!(r.read_at_least(1)[0].text().as_deref(), Some("over SASL_SSL"));

    // A wrong password: the message waits, the status says why, the fix delivers it.
    s.set("sasl.password", "not-the-password");
    s.0.execute("SELECT kafka.produce($1, 'after a wrong password')", &[&t]).unwrap();
    s.wait_for_error("Authentication failed", 1);
    let shown: String = s.0.query_one("SELECT last_error FROM kafka.status", &[]).unwrap().get(0);
    assert!(!shown.contains("not-the-password"), "the status never shows a password");
    s.set("sasl.password", &env("KAFKA_SCRAM_PASSWORD"));
    assert_eq!(r.read_at_least(2)[1].text().as_deref(), Some("after a wrong password"));

    // A CA that did not sign the broker's certificate: same story.
    s.set("ssl.ca.location", &env("KAFKA_UNTRUSTED_CA"));
    s.0.execute("SELECT kafka.produce($1, 'after an untrusted CA')", &[&t]).unwrap();
    s.wait_for_error("certificate verify failed", 1);
    s.set("ssl.ca.location", &env("KAFKA_CA"));
    assert_eq!(r.read_at_least(3)[2].text().as_deref(), Some("after an untrusted CA"));

    // The password in a file that the SQL only names: a missing file shows in the status, and
    // the file, once there, is read when the producer is made (a Java properties file works too).
    let file = std::env::temp_dir().join(format!("pg_kafka_e2e_secret_{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    s.set("sasl.password", &format!("${{file:{}}}", file.display()));
    s.0.execute("SELECT kafka.produce($1, 'with the password in a file')", &[&t]).unwrap();
    s.wait_for_error("could not read the file of \"sasl.password\"", 1);
    std::fs::write(&file, format!("{}\n", env("KAFKA_SCRAM_PASSWORD"))).unwrap();
    s.0.batch_execute("SELECT kafka.close()").unwrap();
    assert_eq!(r.read_at_least(4)[3].text().as_deref(), Some("with the password in a file"));
    std::fs::write(&file, format!("sasl.password={}\n", env("KAFKA_SCRAM_PASSWORD"))).unwrap();
    s.set("sasl.password", &format!("${{file:{}:sasl.password}}", file.display()));
    s.0.execute("SELECT kafka.produce($1, 'from a properties file')", &[&t]).unwrap();
    assert_eq!(r.read_at_least(5)[4].text().as_deref(), Some("from a properties file"));
    std::fs::remove_file(&file).unwrap();
}
