//! Attacks on the privilege model, each run as the role that would try it: the refusal has the
//! expected SQLSTATE, the server did not restart, queued messages were not touched, and nobody
//! gained what they tried to get.

use pg_kafka_e2e::*;
use postgres::Client;

fn postmaster_start(c: &mut Client) -> String {
    c.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0)
}

fn is_superuser(c: &mut Client, role: &str) -> bool {
    c.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role]).unwrap().get(0)
}

/// V1: the generated relay function spliced capture_config.topic into code run as its owner.
/// There is no generated code any more: the forged row cannot reach anything that runs it.
#[test]
fn a_forged_capture_row_cannot_make_an_admin_superuser() {
    let mut c = pg();
    as_role(&mut c, "e2e_v1", &["kafka_admin"], |c| {
        let _ = c.batch_execute(
            "INSERT INTO kafka.capture_config (relid, table_name, kind, topic)
             VALUES (4242424242, 'x', 'outbox', '$fn$; ALTER ROLE e2e_v1 SUPERUSER; SELECT $fn$')",
        );
        let (state, _) = error_of(c, "SELECT kafka.capture_function(4242424242)");
        assert_eq!(state, "42883", "no code generator is left to call");
        assert!(!is_superuser(c, "e2e_v1"));
    });
    c.batch_execute("DELETE FROM kafka.capture_config WHERE relid = 4242424242").unwrap();
}

/// V3: renaming a secret's row to a name whose value is readable.
#[test]
fn an_admin_cannot_read_a_secret_by_renaming_its_row() {
    let mut c = pg();
    c.batch_execute("DELETE FROM kafka.config WHERE name = 'sasl.password'").unwrap();
    c.batch_execute("INSERT INTO kafka.config VALUES ('sasl.password', 'renamed-secret-v3')").unwrap();
    as_role(&mut c, "e2e_v3", &["kafka_admin"], |c| {
        for target in ["sasl.kerberos.service.name", "compression.type", "client.id"] {
            let sql = format!("UPDATE kafka.config SET name = '{target}' WHERE name = 'sasl.password'");
            assert_eq!(error_of(c, &sql).0, "42501", "{sql}");
        }
        assert_eq!(error_of(c, "DELETE FROM kafka.config WHERE name = 'sasl.password'").0, "42501");
        let shown: Vec<String> =
            c.query("SELECT value FROM kafka.settings", &[]).unwrap().iter().map(|r| r.get(0)).collect();
        assert!(!shown.iter().any(|v| v.contains("renamed-secret")), "{shown:?}");
    });
    c.batch_execute("DELETE FROM kafka.config WHERE name = 'sasl.password'").unwrap();
    let log = std::fs::read_to_string(server_log()).unwrap();
    assert!(!log.contains("renamed-secret-v3"), "the secret reached the server log");
}

/// V4: with a password stored, pointing the producer at another host would send it there.
/// V2, V5, W4, W5: settings that run commands, weaken TLS, load libraries or replace the brokers.
#[test]
fn an_admin_cannot_redirect_credentials_or_weaken_the_producer() {
    let mut c = pg();
    c.batch_execute("DELETE FROM kafka.config WHERE name = 'sasl.password'").unwrap();
    c.batch_execute("INSERT INTO kafka.config VALUES ('sasl.password', 'v4-secret')").unwrap();
    as_role(&mut c, "e2e_v4", &["kafka_admin"], |c| {
        for sql in [
            "INSERT INTO kafka.broker VALUES ('127.0.0.1', 19092)",
            "UPDATE kafka.broker SET port = 19092",
            "DELETE FROM kafka.broker",
            "INSERT INTO kafka.config VALUES ('security.protocol', 'SASL_PLAINTEXT')",
            "INSERT INTO kafka.config VALUES ('sasl.mechanisms', 'PLAIN')",
        ] {
            assert_eq!(error_of(c, sql).0, "42501", "{sql}");
        }
    });
    c.batch_execute("DELETE FROM kafka.config WHERE name = 'sasl.password'").unwrap();
    as_role(&mut c, "e2e_v5", &["kafka_admin"], |c| {
        for sql in [
            "INSERT INTO kafka.config VALUES ('sasl.kerberos.principal', 'x; id > proof.txt; #')",
            "INSERT INTO kafka.config VALUES ('enable.ssl.certificate.verification', 'f')",
            "INSERT INTO kafka.config VALUES ('enable.ssl.certificate.verification', 'FALSE')",
            "INSERT INTO kafka.config VALUES ('ssl.providers', 'legacy')",
        ] {
            assert_eq!(error_of(c, sql).0, "42501", "{sql}");
        }
        for sql in [
            "INSERT INTO kafka.config VALUES ('metadata.broker.list', '127.0.0.1:1')",
            "INSERT INTO kafka.config VALUES ('delivery.report.only.error', 'true')",
        ] {
            assert_eq!(error_of(c, sql).0, "22023", "reserved for everyone: {sql}");
        }
        // Without a secret stored, brokers are the admin's to manage.
        c.batch_execute("INSERT INTO kafka.broker VALUES ('localhost', 9092) ON CONFLICT DO NOTHING")
            .unwrap();
    });
    for sql in [
        "INSERT INTO kafka.config VALUES ('metadata.broker.list', '127.0.0.1:1')",
        "INSERT INTO kafka.config VALUES ('delivery.report.only.error', 'true')",
    ] {
        assert_eq!(error_of(&mut c, sql).0, "22023", "reserved even for a superuser: {sql}");
    }
}

/// V9: pg_kafka's trigger functions attached the wrong way crashed the server.
#[test]
fn misused_trigger_functions_raise_errors_instead_of_crashing() {
    let mut c = pg();
    let started = postmaster_start(&mut c);
    let t = topic("v9");
    let queued = topic("v9_queued");
    let mut other = pg();
    let mut pending = other.transaction().unwrap();
    pending.execute("SELECT kafka.produce($1, 'queued before the attack')", &[&queued]).unwrap();
    as_role(&mut c, "e2e_v9", &["kafka_admin", "CREATE ON SCHEMA public"], |c| {
        c.batch_execute(&format!("CREATE TABLE {t} (id int)")).unwrap();
        for (i, (timing, function)) in [
            ("AFTER INSERT ON {t} FOR EACH ROW", "kafka_internal.capture_changes('t','1','','t','t')"),
            ("BEFORE INSERT ON {t} FOR EACH STATEMENT", "kafka_internal.capture_changes('t','1','','t','t')"),
            ("AFTER INSERT ON {t} FOR EACH STATEMENT", "kafka_internal.capture_changes('t','1','','t','t')"),
            ("AFTER INSERT ON {t} FOR EACH ROW", "kafka_internal.capture_outbox_relay('x.%s', 'f')"),
            ("AFTER INSERT ON {t} FOR EACH STATEMENT", "kafka_internal.capture_outbox_relay('x.%s', 'f')"),
        ]
        .iter()
        .enumerate()
        {
            let timing = timing.replace("{t}", &t);
            c.batch_execute(&format!("CREATE TRIGGER v9_{i} {timing} EXECUTE FUNCTION {function}")).unwrap();
            let (state, _) = error_of(c, &format!("INSERT INTO {t} VALUES (1)"));
            assert_eq!(state, "39P01", "{timing} {function}");
            c.batch_execute(&format!("DROP TRIGGER v9_{i} ON {t}")).unwrap();
        }
        c.batch_execute(&format!("DROP TABLE {t}")).unwrap();
    });
    assert_eq!(postmaster_start(&mut c), started, "the server did not restart");
    pending.commit().unwrap();
    assert_eq!(TopicReader::new(&queued).read_at_least(1)[0].text().unwrap(), "queued before the attack");
}

/// V10: a record Kafka can never take (a timestamp ten years ahead) was retried forever in front
/// of every later message. Kafka refuses the whole record batch it travels in, so the worker
/// sends that batch again one message at a time: the bad one is dead-lettered, its neighbours
/// (same transaction, same batch) arrive, in order.
#[test]
fn a_record_kafka_refuses_for_good_does_not_stop_the_queue() {
    let mut c = pg();
    let t = topic("v10");
    c.batch_execute(
        "DROP ROLE IF EXISTS e2e_v10; CREATE ROLE e2e_v10 IN ROLE kafka_producer; SET ROLE e2e_v10",
    )
    .unwrap();
    // Kafka refuses timestamps more than an hour ahead of its clock (InvalidTimestamp).
    let mut tx = c.transaction().unwrap();
    tx.execute("SELECT kafka.produce($1, 'before ' || i) FROM generate_series(1, 500) i", &[&t]).unwrap();
    tx.execute("SELECT kafka.publish($1, 'far', ts => now() + interval '10 years')", &[&t]).unwrap();
    tx.execute("SELECT kafka.produce($1, 'behind ' || i) FROM generate_series(1, 500) i", &[&t]).unwrap();
    tx.commit().unwrap();
    c.batch_execute("RESET ROLE; DROP ROLE e2e_v10").unwrap();
    let mut r = TopicReader::new(&t);
    let got = r.texts_until("behind 500");
    let mut want: Vec<String> = (1..=500).map(|i| format!("before {i}")).collect();
    want.extend((1..500).map(|i| format!("behind {i}")));
    let mut firsts = Vec::new();
    for m in &got {
        if !firsts.contains(m) {
            firsts.push(m.clone());
        }
    }
    assert_eq!(firsts, want, "every other message arrives, in order");
    let error: String =
        c.query_one("SELECT error FROM kafka.dead_letter WHERE topic = $1", &[&t]).unwrap().get(0);
    assert!(error.contains("imestamp"), "{error}");
}

/// V8: a non-superuser who may create objects in the served database cannot make the worker
/// run its code: every operator and function in the worker's SQL is qualified and its
/// search_path is pg_catalog. (`host || ':' || port` picked up a `public.||(text, integer)`.)
#[test]
fn the_worker_runs_no_code_of_other_roles() {
    let mut c = pg();
    let t = topic("v8");
    c.batch_execute("DROP OWNED BY e2e_v8").ok(); // left by an earlier, failed run
    c.batch_execute(
        "DROP ROLE IF EXISTS e2e_v8; CREATE ROLE e2e_v8;
         GRANT CREATE ON SCHEMA public TO e2e_v8; SET ROLE e2e_v8;
         CREATE FUNCTION public.v8_concat(text, integer) RETURNS text LANGUAGE sql
           AS $$ SELECT 'owned-by-v8:1' $$;
         CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = integer, FUNCTION = public.v8_concat);
         RESET ROLE;",
    )
    .unwrap();
    // The worker reads the brokers again and still reaches the real one.
    c.batch_execute("SELECT kafka.close()").unwrap();
    c.execute("SELECT kafka.produce($1, 'still delivered')", &[&t]).unwrap();
    let got = TopicReader::new(&t).read_at_least(1)[0].text().unwrap();
    c.batch_execute("DROP OWNED BY e2e_v8; DROP ROLE e2e_v8").unwrap();
    assert_eq!(got, "still delivered");
}

/// V6, W7, W8: a capture row makes pg_kafka read a table and emit its rows, so writing one takes
/// what capturing takes (TRIGGER on the table). Backfills run as the caller: the table owner's
/// code (a domain CHECK on the key) never runs as a superuser, and a table the caller cannot read
/// is not copied into the outbox. W14: an owner with kafka_admin can backfill and uncapture.
#[test]
fn captures_and_backfills_run_with_the_callers_rights_only() {
    let mut c = pg();
    let secret = topic("v6_secret");
    let own = topic("v6_own");
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {secret}; CREATE TABLE {secret} (id int PRIMARY KEY, card text);
         INSERT INTO {secret} VALUES (1, 'card-number-v6')"
    ))
    .unwrap();
    as_role(&mut c, "e2e_v6", &["kafka_admin", "CREATE ON SCHEMA public"], |c| {
        // A forged row for a table the role cannot touch.
        let forged = format!(
            "INSERT INTO kafka.capture_config (relid, table_name, kind, topic, key_attnums)
             VALUES ('{secret}'::regclass, '{secret}', 'table', '{secret}', '{{1}}')"
        );
        assert_eq!(error_of(c, &forged).0, "42501", "{forged}");
        assert_eq!(error_of(c, &format!("SELECT kafka.capture('{secret}')")).0, "42501");
        assert_eq!(error_of(c, &format!("CALL kafka.backfill('{secret}')")).0, "55000", "not captured");
        // Its own table, whose key domain runs its code: as itself, not as a superuser.
        c.batch_execute(&format!(
            "CREATE TABLE v6_seen (who text, super boolean);
             CREATE FUNCTION v6_check(int) RETURNS boolean LANGUAGE sql AS
               $$ INSERT INTO public.v6_seen SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user
                  RETURNING true $$;
             CREATE DOMAIN v6_key AS int CHECK (v6_check(VALUE));
             CREATE TABLE {own} (id v6_key PRIMARY KEY, v text);
             INSERT INTO {own} SELECT i, 'row ' || i FROM generate_series(1, 5) i;
             SELECT kafka.capture('{own}', topic => '{own}');"
        ))
        .unwrap();
        c.batch_execute(&format!("CALL kafka.backfill('{own}', 2)")).unwrap();
        let supers: i64 = c.query_one("SELECT count(*) FROM v6_seen WHERE super", &[]).unwrap().get(0);
        assert_eq!(supers, 0, "the domain's code ran as a superuser");
        let done: i64 = c
            .query_one(
                &format!("SELECT rows_done FROM kafka.backfills WHERE \"table\" = '{own}'::regclass"),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(done, 5);
        // backfill_events with rows of another table, or not rows at all.
        for sql in [
            format!("SELECT kafka_internal.backfill_events('{own}'::regclass, ARRAY[1, 2, 3])"),
            format!(
                "SELECT kafka_internal.backfill_events('{own}'::regclass, ARRAY(SELECT s FROM v6_seen s))"
            ),
        ] {
            assert_eq!(error_of(c, &sql).0, "42804", "{sql}");
        }
        assert!(c.query_one(&format!("SELECT kafka.uncapture('{own}')"), &[]).unwrap().get::<_, bool>(0));
    });
    let got = TopicReader::new(&own).read_at_least(5).to_vec();
    assert!(got.iter().all(|m| m.text().unwrap().contains("\"op\":\"r\"")), "the owner's backfill arrived");
    let mut r = TopicReader::new(&secret);
    c.execute(&format!("SELECT kafka.produce('{secret}', 'end')"), &[]).unwrap();
    let seen = r.texts_until("end");
    assert!(!seen.iter().any(|m| m.contains("card-number-v6")), "{seen:?}");
    // A superuser's backfill_events call with wrong element types is an error, not a crash.
    let (state, _) = error_of(
        &mut c,
        &format!("SELECT kafka_internal.backfill_events('{secret}'::regclass, ARRAY[1,2,3])"),
    );
    assert_eq!(state, "55000", "not captured: nothing to encode");
    c.batch_execute(&format!("DROP TABLE {secret}")).unwrap();
}

/// W11: a captured table's topic is written by its capture only, not by a producer's forged
/// events (through produce, publish, autonomous_publish or a relayed outbox table). With rows
/// in kafka.topic_grants, roles produce only to the topics granted to them, and a change of
/// the grants reaches sessions that already produced.
#[test]
fn producers_write_only_the_topics_they_may() {
    let _clean = NoTopicGrants;
    let mut c = pg();
    let captured = topic("w11_captured");
    let relayed = topic("w11_relayed");
    c.batch_execute(&format!(
        "CREATE TABLE {captured} (id int PRIMARY KEY); SELECT kafka.capture('{captured}', topic => '{captured}');
         CREATE TABLE {relayed} (id uuid, aggregatetype text, aggregateid text, type text, payload jsonb);
         SELECT kafka.capture_outbox('{relayed}', topic_pattern => '%s');"
    ))
    .unwrap();
    as_role(&mut c, "e2e_w11", &["kafka_producer"], |c| {
        c.batch_execute(&format!("RESET ROLE; GRANT INSERT ON {relayed} TO e2e_w11; SET ROLE e2e_w11"))
            .unwrap();
        for sql in [
            format!("SELECT kafka.produce('{captured}', '{{\"op\":\"d\"}}')"),
            format!("SELECT kafka.publish('{captured}', '{{\"op\":\"d\"}}'::jsonb, key => '{{\"id\":1}}')"),
            format!("SELECT * FROM kafka.autonomous_publish('{captured}', 'forged')"),
            format!("INSERT INTO {relayed} VALUES (gen_random_uuid(), '{captured}', '1', 'forged', '{{}}')"),
        ] {
            let (state, hint) = error_of(c, &sql);
            assert_eq!(state, "42501", "{sql}");
            assert!(hint.unwrap().contains("capture"), "{sql}");
        }
        c.execute(&format!("SELECT kafka.produce('{relayed}_free', 'no grants yet: any topic')"), &[])
            .unwrap();
    });
    c.batch_execute(
        "DROP ROLE IF EXISTS e2e_w11_group; CREATE ROLE e2e_w11_group;
         INSERT INTO kafka.topic_grants VALUES ('e2e_w11_group', 'w11.allowed.*'), ('e2e_w11_other', 'w11.exact')",
    )
    .unwrap();
    let mut admin = pg();
    as_role(&mut c, "e2e_w11b", &["kafka_producer", "e2e_w11_group"], |c| {
        c.execute("SELECT kafka.produce('w11.allowed.x', 'granted through a group')", &[]).unwrap();
        for t in ["w11.exact", "w11.allowed", "w11.other"] {
            let (state, hint) = error_of(c, &format!("SELECT kafka.produce('{t}', 'x')"));
            assert_eq!(state, "42501", "{t}");
            assert!(hint.unwrap().contains("kafka.topic_grants"));
        }
        // Revoked in another session: this session, which produced there before, is refused.
        admin.batch_execute("DELETE FROM kafka.topic_grants WHERE grantee = 'e2e_w11_group'").unwrap();
        assert_eq!(error_of(c, "SELECT kafka.produce('w11.allowed.x', 'x')").0, "42501");
        admin.batch_execute("INSERT INTO kafka.topic_grants VALUES ('e2e_w11b', 'w11.other')").unwrap();
        c.execute("SELECT kafka.produce('w11.other', 'granted now')", &[]).unwrap();
    });
    c.batch_execute(&format!("DROP ROLE e2e_w11_group; DROP TABLE {captured}; DROP TABLE {relayed}"))
        .unwrap();
}

/// W10: with kafka.max_backlog set for a role, its transactions may not queue more once the
/// outbox is larger than that (53400, with a hint); other roles (no limit) still may, and the
/// limit is a superuser's to set.
#[test]
fn a_role_with_a_backlog_limit_cannot_fill_the_disk() {
    let mut c = pg();
    let t = topic("w10");
    // An open transaction whose 10,001 messages were already written to the outbox (a flush):
    // the outbox takes some space, and cannot be emptied meanwhile.
    let mut other = pg();
    let mut open = other.transaction().unwrap();
    open.execute("SELECT kafka.produce($1, 'held') FROM generate_series(1, 10001)", &[&t]).unwrap();
    as_role(&mut c, "e2e_w10", &["kafka_producer"], |c| {
        let (state, _) = error_of(c, "SET kafka.max_backlog = '1GB'");
        assert_eq!(state, "42501", "a role cannot lift its own limit");
        c.batch_execute("RESET ROLE; ALTER ROLE e2e_w10 SET kafka.max_backlog = '1kB'; SET ROLE e2e_w10")
            .unwrap();
        // The role setting applies to new sessions; this one takes it the way a login would.
        c.batch_execute("RESET ROLE; SET kafka.max_backlog = '1kB'; SET ROLE e2e_w10").unwrap();
        let (state, hint) = error_of(c, &format!("SELECT kafka.produce('{t}', 'x')"));
        assert_eq!(state, "53400");
        assert!(hint.unwrap().contains("kafka.max_backlog"));
        c.batch_execute("RESET ROLE; RESET kafka.max_backlog; ALTER ROLE e2e_w10 RESET kafka.max_backlog; SET ROLE e2e_w10")
            .unwrap();
        c.execute(&format!("SELECT kafka.produce('{t}', 'under no limit')"), &[]).unwrap();
    });
    open.rollback().unwrap();
    assert_eq!(TopicReader::new(&t).read_at_least(1)[0].text().as_deref(), Some("under no limit"));
}

/// W12: code pg_kafka runs as the extension's owner (`kafka.release()`), or that a superuser
/// runs with a path others can write to (`CALL kafka.backfill`), resolved operators along the
/// caller's search_path: an operator a role created in its schema ran as the owner or the
/// superuser. The operator records who ran it; nobody but its creator may have.
#[test]
fn operators_on_the_callers_path_never_run_with_more_rights() {
    let mut c = pg();
    let t = topic("w12");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY); INSERT INTO {t} VALUES (1), (2);
         SELECT kafka.capture('{t}', topic => '{t}');
         DROP TABLE IF EXISTS w12_ran; CREATE TABLE w12_ran (who text); GRANT INSERT ON w12_ran TO PUBLIC;"
    ))
    .unwrap();
    as_role(&mut c, "e2e_w12", &["kafka_admin", "CREATE ON SCHEMA public"], |c| {
        // The operators of release()'s statements and of the backfill procedure's checks, each
        // recording its caller and trying to make its creator a superuser.
        c.batch_execute(
            "CREATE FUNCTION public.w12_spy(anyelement, anyelement) RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
               INSERT INTO public.w12_ran VALUES (current_user);
               IF current_user <> session_user OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
                 EXECUTE 'ALTER ROLE e2e_w12 SUPERUSER';
               END IF;
               RETURN false;
             END $$;
             CREATE FUNCTION public.w12_gt(bigint, integer) RETURNS boolean LANGUAGE sql AS
               'SELECT public.w12_spy($1, $2::bigint)';
             CREATE OPERATOR public.> (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = public.w12_gt);
             CREATE FUNCTION public.w12_eq(regclass, regclass) RETURNS boolean LANGUAGE sql AS
               'SELECT public.w12_spy($1::oid, $2::oid)';
             CREATE OPERATOR public.= (LEFTARG = regclass, RIGHTARG = regclass, FUNCTION = public.w12_eq);
             CREATE FUNCTION public.w12_oideq(oid, regclass) RETURNS boolean LANGUAGE sql AS
               'SELECT public.w12_spy($1, $2::oid)';
             CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.w12_oideq);
             SET search_path = public, pg_catalog;
             DO $$ BEGIN  -- refused here (the live database), after its check ran as the owner
                 PERFORM kafka.release();
             EXCEPTION WHEN object_not_in_prerequisite_state THEN NULL;
             END $$;
             RESET search_path;",
        )
        .unwrap();
        assert!(!is_superuser(c, "e2e_w12"), "release() ran the role's operator as the owner");
        // A superuser backfills with the role's schema first on its path.
        c.batch_execute("RESET ROLE; SET search_path = public, pg_catalog").unwrap();
        c.batch_execute(&format!("CALL kafka.backfill('{t}')")).unwrap();
        c.batch_execute("RESET search_path; SET ROLE e2e_w12").unwrap();
        assert!(!is_superuser(c, "e2e_w12"), "the backfill ran the role's operator as a superuser");
    });
    let ran: Vec<String> =
        c.query("SELECT DISTINCT who FROM w12_ran", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert!(ran.is_empty(), "the role's operators ran as {ran:?}");
    let events = TopicReader::new(&t).read_at_least(2).len();
    assert!(events >= 2, "the backfill itself ran");
    c.batch_execute(&format!("DROP TABLE {t}; DROP TABLE w12_ran")).unwrap();
}

/// W13: pg_kafka's own topics. A record on the position topic, under the worker's key, decides
/// what the worker skips after a restart in exactly_once mode; nobody writes there (or to the
/// transaction topic) but the worker: not a producer, not a capture, not a superuser.
#[test]
fn nobody_writes_the_workers_own_topics() {
    let mut c = pg();
    let own: String = c.query_one("SELECT current_setting('kafka.position_topic')", &[]).unwrap().get(0);
    let outbox = topic("w13_outbox");
    let table = topic("w13_table");
    c.batch_execute(&format!(
        "CREATE TABLE {outbox} (id uuid, aggregatetype text, aggregateid text, type text, payload jsonb);
         SELECT kafka.capture_outbox('{outbox}', topic_pattern => '%s');
         CREATE TABLE {table} (id int PRIMARY KEY);"
    ))
    .unwrap();
    let attempts = [
        format!("SELECT kafka.produce('{own}', 'forged position')"),
        format!("SELECT kafka.publish('{own}', 'forged'::bytea, key => 'pg_kafka-1-1')"),
        format!("SELECT * FROM kafka.autonomous_publish('{own}', 'forged')"),
        format!("INSERT INTO {outbox} VALUES (gen_random_uuid(), '{own}', 'k', 't', '{{}}')"),
        format!("SELECT kafka.capture('{table}', topic => '{own}')"),
    ];
    for sql in &attempts {
        assert_eq!(error_of(&mut c, sql).0, "42501", "as a superuser: {sql}");
    }
    c.batch_execute(&format!("GRANT INSERT ON {outbox} TO kafka_producer")).unwrap();
    as_role(&mut c, "e2e_w13", &["kafka_producer"], |c| {
        for sql in &attempts[..4] {
            let (state, hint) = error_of(c, sql);
            assert_eq!(state, "42501", "as a producer: {sql}");
            assert!(hint.unwrap().contains("kafka.position_topic"), "{sql}");
        }
    });
    c.batch_execute(&format!("DROP TABLE {outbox}; DROP TABLE {table}")).unwrap();
}

/// W14: the capture and relay trigger functions, attached by hand (a role needs EXECUTE on them
/// to capture its own tables), wrote change events, or any message, to a topic of the role's
/// choosing: another table's capture topic, on behalf of a role that may not produce. They now
/// fire only in the triggers kafka.capture() and kafka.capture_outbox() made, with the arguments
/// kafka.capture_config holds; and a capture's topic is its own.
#[test]
fn capture_triggers_write_only_what_their_capture_says() {
    let mut c = pg();
    let victim = topic("w14_victim");
    c.batch_execute(&format!(
        "CREATE TABLE {victim} (id int PRIMARY KEY, status text); SELECT kafka.capture('{victim}', topic => '{victim}');"
    ))
    .unwrap();
    let args: Vec<String> = c
        .query_one(
            &format!(
                "SELECT kafka_internal.capture_args(c) FROM kafka.capture_config c WHERE relid = '{victim}'::regclass"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    let args = args.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(", ");
    as_role(&mut c, "e2e_w14", &["kafka_admin", "CREATE ON SCHEMA public"], |c| {
        for (table, temp) in [("w14_mine", ""), ("w14_temp", "TEMP")] {
            c.batch_execute(&format!(
                "CREATE {temp} TABLE {table} (id int PRIMARY KEY, status text);
                 CREATE TRIGGER w14_copy AFTER INSERT ON {table} REFERENCING NEW TABLE AS n FOR EACH STATEMENT
                   EXECUTE FUNCTION kafka_internal.capture_changes({args});
                 CREATE TABLE {table}_ob (id uuid, aggregatetype text, aggregateid text, type text, payload text);
                 CREATE TRIGGER w14_relay AFTER INSERT ON {table}_ob REFERENCING NEW TABLE AS n FOR EACH STATEMENT
                   EXECUTE FUNCTION kafka_internal.capture_outbox_relay('%s', 'f');"
            ))
            .unwrap();
            let forged = format!("INSERT INTO {table} VALUES (42, 'refunded')");
            assert_eq!(error_of(c, &forged).0, "39P01", "{forged}");
            let relayed =
                format!("INSERT INTO {table}_ob VALUES (gen_random_uuid(), '{victim}', '42', 't', 'x')");
            assert_eq!(error_of(c, &relayed).0, "39P01", "{relayed}");
        }
        // Its own table captured into the victim's topic, directly or through capture_config.
        assert_eq!(error_of(c, &format!("SELECT kafka.capture('w14_mine', topic => '{victim}')")).0, "42501");
        let row = format!(
            "INSERT INTO kafka.capture_config (relid, table_name, kind, topic, key_attnums)
             VALUES ('w14_mine'::regclass, 'w14_mine', 'table', '{victim}', '{{1}}')"
        );
        assert_eq!(error_of(c, &row).0, "42501", "{row}");
        let temp = "INSERT INTO kafka.capture_config (relid, table_name, kind, topic, key_attnums)
                    VALUES ('w14_temp'::regclass, 'w14_temp', 'table', 'w14.temp', '{1}')";
        assert_eq!(error_of(c, temp).0, "0A000", "{temp}");
        // What it may do: capture its own table to a topic of its own, and relay an outbox it
        // captured.
        c.batch_execute("DROP TRIGGER w14_copy ON w14_mine; DROP TRIGGER w14_relay ON w14_mine_ob").unwrap();
        c.batch_execute(&format!(
            "SELECT kafka.capture('w14_mine', topic => '{victim}_mine');
             INSERT INTO w14_mine VALUES (1, 'own');"
        ))
        .unwrap();
    });
    c.execute(&format!("SELECT kafka.produce('{victim}', 'end')"), &[]).unwrap();
    let seen = TopicReader::new(&victim).texts_until("end");
    assert!(seen.is_empty(), "forged events reached the victim's topic: {seen:?}");
    let own = TopicReader::new(&format!("{victim}_mine")).read_at_least(1)[0].text().unwrap();
    assert!(own.contains("\"own\""), "{own}");
    c.batch_execute(&format!("DROP TABLE {victim}")).unwrap();
}

/// W15: a credential kept in a file (a keytab, a private key's location) is handed to whatever
/// broker the worker is pointed at, like a stored password: while one is configured only a
/// superuser may change kafka.broker. And a database's defaults (ALTER DATABASE … SET), which
/// its owner may set, cannot stop the worker: read-only transactions, timeouts, another role.
#[test]
fn file_credentials_guard_the_brokers_and_database_defaults_do_not_stop_the_worker() {
    let mut c = pg();
    let db: String = c.query_one("SELECT current_database()", &[]).unwrap().get(0);
    // Undoes the test's settings even when it fails half-way (with the database's defaults in
    // place, a new session must override them first).
    struct Reset(String);
    impl Drop for Reset {
        fn drop(&mut self) {
            let db = &self.0;
            let mut c = connect_to(db);
            c.batch_execute(
                "SET ROLE NONE; SET default_transaction_read_only = off; SET statement_timeout = 0",
            )
            .unwrap();
            c.batch_execute(&format!(
                "DELETE FROM kafka.config WHERE name = 'ssl.key.location';
                 ALTER DATABASE {db} RESET default_transaction_read_only; ALTER DATABASE {db} RESET statement_timeout;
                 ALTER DATABASE {db} RESET role; DROP ROLE IF EXISTS e2e_w15_nobody"
            ))
            .unwrap();
        }
    }
    let _reset = Reset(db.clone());
    c.batch_execute(
        "DELETE FROM kafka.config WHERE name = 'ssl.key.location';
                     INSERT INTO kafka.config VALUES ('ssl.key.location', '/nonexistent/w15.key')",
    )
    .unwrap();
    as_role(&mut c, "e2e_w15", &["kafka_admin"], |c| {
        let (state, _) = error_of(c, "UPDATE kafka.broker SET host = host");
        assert_eq!(state, "42501", "a broker change with a key file configured");
        assert_eq!(error_of(c, "INSERT INTO kafka.broker VALUES ('127.0.0.1', 19999)").0, "42501");
    });
    c.batch_execute("DELETE FROM kafka.config WHERE name = 'ssl.key.location'").unwrap();

    // Issue 20: also who it is (a role with no rights on pg_kafka's tables).
    c.batch_execute(&format!(
        "ALTER DATABASE {db} SET default_transaction_read_only = on; ALTER DATABASE {db} SET statement_timeout = '1ms';
         DROP ROLE IF EXISTS e2e_w15_nobody; CREATE ROLE e2e_w15_nobody; ALTER DATABASE {db} SET role = 'e2e_w15_nobody'"
    ))
    .unwrap();
    let old = status(&mut c).pid.expect("worker runs");
    c.execute("SELECT pg_terminate_backend($1)", &[&old]).unwrap();
    wait_until("a new worker", || status(&mut c).pid.is_some_and(|p| p != old));
    let t = topic("w15");
    if let Err(e) = c.execute("SELECT kafka.produce($1, x::text) FROM generate_series(1, 2000) x", &[&t]) {
        panic!("{e:?}");
    }
    let got = TopicReader::new(&t).read_at_least(2000).len();
    assert_eq!(got, 2000);
    // And it recorded the delivery (a read-only worker would send them again and again).
    wait_until("the queue to drain", || status(&mut c).backlog == 0);
    assert_eq!(status(&mut c).last_error, None);
}

/// W16: kafka.backfill_progress says from which key a resumed backfill goes on: a kafka_admin
/// who may not backfill a table could move it past rows (or reset it) for the table's owner.
/// Writing it takes what backfilling takes; the owner's own backfill still records it.
#[test]
fn a_backfills_progress_is_written_only_by_who_may_backfill_the_table() {
    let mut c = pg();
    let t = topic("w16");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY); INSERT INTO {t} SELECT generate_series(1, 3);
         SELECT kafka.capture('{t}', topic => '{t}');"
    ))
    .unwrap();
    c.batch_execute(&format!("CALL kafka.backfill('{t}')")).unwrap();
    as_role(&mut c, "e2e_w16", &["kafka_admin"], |c| {
        for sql in [
            format!("UPDATE kafka.backfill_progress SET last_key = '{{999999}}', finished_at = NULL WHERE relid = '{t}'::regclass"),
            format!("DELETE FROM kafka.backfill_progress WHERE relid = '{t}'::regclass"),
            format!("INSERT INTO kafka.backfill_progress (relid, last_key) VALUES ('{t}'::regclass, '{{2}}')"),
        ] {
            assert_eq!(error_of(c, &sql).0, "42501", "{sql}");
        }
    });
    let (done, finished): (i64, bool) = c
        .query_one(
            &format!("SELECT rows_done, finished_at IS NOT NULL FROM kafka.backfills WHERE \"table\" = '{t}'::regclass"),
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((done, finished), (3, true));
    assert!(c.query_one(&format!("SELECT kafka.uncapture('{t}')"), &[]).unwrap().get::<_, bool>(0));
    c.batch_execute(&format!("DROP TABLE {t}")).unwrap();
}
