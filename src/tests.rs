//! In-database tests (`cargo pgrx test`). They run inside transactions that always roll back, on a
//! server where pg_kafka is *not* preloaded; commit, the worker and Kafka are covered by the
//! end-to-end tests in `tests/e2e`.

use pgrx::prelude::*;

fn sqlstate_of(sql: &str) -> (String, Option<String>) {
    Spi::run(&format!(
        "DO $$ BEGIN {sql}; RAISE EXCEPTION 'no error'; EXCEPTION WHEN OTHERS THEN
           DECLARE s text; h text; BEGIN
             GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, h = PG_EXCEPTION_HINT;
             PERFORM set_config('test.sqlstate', s, true); PERFORM set_config('test.hint', h, true);
           END; END $$"
    ))
    .unwrap();
    let state = Spi::get_one::<String>("SELECT current_setting('test.sqlstate')").unwrap().unwrap();
    let hint = Spi::get_one::<String>("SELECT nullif(current_setting('test.hint'), '')").unwrap();
    (state, hint)
}

#[pg_schema]
mod tests {
    use super::sqlstate_of;
    use pgrx::prelude::*;

    #[pg_test]
    fn bad_topics_are_refused_with_sqlstate_and_hint() {
        for (call, state) in [
            ("PERFORM kafka.produce(NULL, 'm')", "22004"),
            ("PERFORM kafka.produce('', 'm')", "22023"),
            ("PERFORM kafka.produce('a topic', 'm')", "22023"),
            ("PERFORM kafka.produce('..', 'm')", "22023"),
            ("PERFORM kafka.produce(repeat('x', 250), 'm')", "22023"),
        ] {
            let (got, hint) = sqlstate_of(call);
            assert_eq!(got, state, "{call}");
            assert!(hint.is_some_and(|h| h.contains("topic")), "{call}");
        }
    }

    #[pg_test]
    fn produce_refuses_when_not_preloaded() {
        let (state, hint) = sqlstate_of("PERFORM kafka.produce('t', 'm')");
        assert_eq!(state, "55000");
        assert!(hint.unwrap().contains("shared_preload_libraries"));
        let (state, _) = sqlstate_of("PERFORM kafka.close()");
        assert_eq!(state, "55000");
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM kafka.outbox").unwrap(), Some(0));
    }

    #[pg_test]
    fn broker_rows_are_checked() {
        Spi::run("INSERT INTO kafka.broker VALUES ('localhost', 9092)").unwrap();
        Spi::run("INSERT INTO kafka.broker (host) VALUES ('kafka-1.example')").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM kafka.broker WHERE port = 9092").unwrap(),
            Some(2)
        );
        for bad in [
            "INSERT INTO kafka.broker VALUES ('localhost', 0)",
            "INSERT INTO kafka.broker VALUES ('localhost', 70000)",
            "INSERT INTO kafka.broker VALUES ('localhost', NULL)",
            "INSERT INTO kafka.broker VALUES ('a,b', 9092)",
            "INSERT INTO kafka.broker VALUES ('', 9092)",
            "UPDATE kafka.broker SET port = -1",
        ] {
            let (state, hint) = sqlstate_of(bad);
            assert_eq!(state, "22023", "{bad}");
            assert!(hint.is_some(), "{bad}");
        }
    }

    #[pg_test]
    fn status_reports_no_worker_without_preload() {
        let row = Spi::get_two::<bool, i64>("SELECT worker_running, backlog FROM kafka.status").unwrap();
        assert_eq!(row, (Some(false), Some(0)));
    }

    #[pg_test]
    fn public_cannot_produce() {
        let granted = Spi::get_one::<bool>(
            "SELECT has_function_privilege('public', 'kafka.produce(text, text)', 'EXECUTE')
                 OR has_table_privilege('public', 'kafka.outbox', 'INSERT')
                 OR has_table_privilege('public', 'kafka.broker', 'INSERT')",
        );
        assert_eq!(granted, Ok(Some(false)));
    }
}
