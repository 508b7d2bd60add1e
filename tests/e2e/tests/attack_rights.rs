//! Second review's roads to more rights, each tried as the role that would try it: a schema made
//! by another role before CREATE EXTENSION (or given away after), a table owner's code run by a
//! superuser's backfill, and a topic taken over from the role it is granted to.

use pg_kafka_e2e::*;
use postgres::Client;

fn is_superuser(c: &mut Client, role: &str) -> bool {
    c.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role]).unwrap().get(0)
}

/// A scratch database owned by a fresh role (`owner`, LOGIN, not superuser), dropped again by
/// `Drop`, with whatever an earlier failed run left.
struct Scratch {
    db: String,
    owner: String,
}

impl Scratch {
    fn new(db: &str, owner: &str) -> Scratch {
        let mut c = pg();
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).unwrap();
        c.batch_execute(&format!("DROP ROLE IF EXISTS {owner}; CREATE ROLE {owner} LOGIN")).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {db} OWNER {owner}")).unwrap();
        Scratch { db: db.into(), owner: owner.into() }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut c = pg();
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db)).unwrap();
        c.batch_execute(&format!(
            "ALTER ROLE {} NOSUPERUSER; DROP ROLE IF EXISTS {}",
            self.owner, self.owner
        ))
        .unwrap();
    }
}

/// Issue 20, item 1. A database owner makes schema `kafka` before the DBA creates the
/// extension: CREATE EXTENSION refuses it (and a superuser's schema in which others may create
/// objects), leaving nothing behind. Variant: the schema is given to that owner afterwards, who
/// renames it and puts a look-alike `kafka.capture_config` with a trigger in its place; dropping a
/// table fires pg_kafka's event trigger (SECURITY DEFINER), which must not write the look-alike.
#[test]
fn a_schema_another_role_controls_is_never_trusted() {
    let s = Scratch::new("e2e_w20_schema", "e2e_w20_dbowner");
    let mut d = connect_to(&s.db);
    d.batch_execute("SET ROLE e2e_w20_dbowner; CREATE SCHEMA kafka; RESET ROLE").unwrap();
    let (state, hint) = error_of(&mut d, "CREATE EXTENSION kafka");
    assert_eq!(state, "42501", "a schema the database owner made");
    assert!(hint.unwrap().contains("DROP SCHEMA kafka"));
    let left: i64 = d
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = 'kafka_internal'", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "nothing half-installed");

    d.batch_execute(
        "DROP SCHEMA kafka; CREATE SCHEMA kafka; GRANT CREATE ON SCHEMA kafka TO e2e_w20_dbowner",
    )
    .unwrap();
    assert_eq!(error_of(&mut d, "CREATE EXTENSION kafka").0, "42501", "others may create objects in it");

    d.batch_execute("DROP SCHEMA kafka; CREATE SCHEMA kafka; CREATE EXTENSION kafka").unwrap();

    // Given away after the install: its new owner swaps in a look-alike.
    d.batch_execute("ALTER SCHEMA kafka OWNER TO e2e_w20_dbowner").unwrap();
    d.batch_execute(
        "SET ROLE e2e_w20_dbowner;
         ALTER SCHEMA kafka RENAME TO kafka_moved;
         CREATE SCHEMA kafka;
         CREATE TABLE kafka.capture_config (relid oid, kind text, topic text);
         CREATE TABLE kafka.backfill_progress (relid oid);
         CREATE FUNCTION public.w20_escalate() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN EXECUTE 'ALTER ROLE e2e_w20_dbowner SUPERUSER'; RETURN NULL; END $$;
         CREATE TRIGGER w20 BEFORE DELETE OR UPDATE ON kafka.capture_config
           FOR EACH STATEMENT EXECUTE FUNCTION public.w20_escalate();
         CREATE TABLE public.w20_victim (id int PRIMARY KEY);
         ALTER TABLE public.w20_victim ADD COLUMN v text;
         DROP TABLE public.w20_victim;
         RESET ROLE",
    )
    .unwrap();
    assert!(
        !is_superuser(&mut d, "e2e_w20_dbowner"),
        "pg_kafka's event trigger ran the look-alike's trigger"
    );
    drop(d);
}

/// Issue 20, item 2. A table owner's key type with its own casts (to text, as backfill's key
/// reads used, and from text) and a domain whose CHECK calls the owner's function: a superuser's
/// backfill of the table runs them (if at all) as the owner, never with the superuser's rights.
#[test]
fn a_superusers_backfill_runs_no_owner_code_as_superuser() {
    let mut c = pg();
    let t = topic("w20_backfill");
    let owner = "e2e_w20_owner";
    c.batch_execute(&format!("DROP OWNED BY {owner} CASCADE")).ok(); // fails only if there is no such role
    c.batch_execute(&format!(
        "DROP ROLE IF EXISTS {owner}; CREATE ROLE {owner}; GRANT CREATE ON SCHEMA public TO {owner}"
    ))
    .unwrap();
    c.batch_execute(&format!(
        "SET ROLE {owner};
         CREATE TABLE w20_seen (who text, super boolean);
         CREATE FUNCTION w20_spy() RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO public.w20_seen SELECT current_user, r.rolsuper FROM pg_catalog.pg_roles r
              WHERE r.rolname = current_user;
             BEGIN
                 EXECUTE 'ALTER ROLE {owner} SUPERUSER';
             EXCEPTION WHEN OTHERS THEN NULL;
             END;
         END $$;
         CREATE TYPE w20_color AS ENUM ('red', 'green', 'blue');
         CREATE FUNCTION w20_to_text(w20_color) RETURNS text LANGUAGE plpgsql AS
           $$ BEGIN PERFORM public.w20_spy(); RETURN enum_out($1)::text; END $$;
         CREATE FUNCTION w20_from_text(text) RETURNS w20_color LANGUAGE plpgsql AS
           $$ BEGIN PERFORM public.w20_spy(); RETURN enum_in($1::cstring, 'public.w20_color'::regtype::oid); END $$;
         CREATE CAST (w20_color AS text) WITH FUNCTION w20_to_text(w20_color);
         CREATE CAST (text AS w20_color) WITH FUNCTION w20_from_text(text);
         CREATE FUNCTION w20_ok(int) RETURNS boolean LANGUAGE plpgsql AS
           $$ BEGIN PERFORM public.w20_spy(); RETURN true; END $$;
         CREATE DOMAIN w20_num AS int CHECK (w20_ok(VALUE));
         CREATE TABLE {t} (color w20_color, num w20_num, v text, PRIMARY KEY (color, num));
         INSERT INTO {t} SELECT c, i, 'row' FROM unnest(enum_range(NULL::w20_color)) c, generate_series(1, 3) i;
         RESET ROLE;
         SELECT kafka.capture('{t}', topic => '{t}');
         TRUNCATE w20_seen;"
    ))
    .unwrap();
    c.batch_execute(&format!("CALL kafka.backfill('{t}', 2)")).unwrap();
    assert!(!is_superuser(&mut c, owner), "the owner's code ran as a superuser");
    let supers: i64 = c.query_one("SELECT count(*) FROM w20_seen WHERE super", &[]).unwrap().get(0);
    assert_eq!(supers, 0, "the owner's code ran with a superuser's rights");
    let done: i64 = c
        .query_one(&format!("SELECT rows_done FROM kafka.backfills WHERE \"table\" = '{t}'::regclass"), &[])
        .unwrap()
        .get(0);
    assert_eq!(done, 9, "every row, in chunks of 2");
    let events = TopicReader::new(&t).read_at_least(9).len();
    assert_eq!(events, 9);
    c.batch_execute(&format!(
        "SELECT kafka.uncapture('{t}'); DROP OWNED BY {owner} CASCADE; DROP ROLE {owner}"
    ))
    .unwrap();
}

/// Issue 20, item 4. One rule decides who writes a topic, on every path. With `billing.*`
/// granted to a billing role, a kafka_admin can neither capture its own table into a billing
/// topic (by kafka.capture() or a row of kafka.capture_config) nor reach one through a relayed
/// outbox table; with no grants at all, a kafka_admin (not a producer) still cannot produce
/// through a relayed outbox. The billing role keeps its topic.
#[test]
fn no_role_takes_over_a_topic_granted_to_another() {
    let _clean = NoTopicGrants;
    let mut c = pg();
    let billing = topic("w20_billing");
    let target = format!("{billing}.a");
    c.batch_execute(&format!(
        "DROP ROLE IF EXISTS e2e_w20_billing; CREATE ROLE e2e_w20_billing; GRANT kafka_producer TO e2e_w20_billing;
         INSERT INTO kafka.topic_grants VALUES ('e2e_w20_billing', '{billing}.*')"
    ))
    .unwrap();
    as_role(&mut c, "e2e_w20_admin", &["kafka_admin", "CREATE ON SCHEMA public"], |c| {
        c.batch_execute(
            "CREATE TABLE w20_mine (id int PRIMARY KEY, v text);
             CREATE TABLE w20_relay (id uuid, aggregatetype text, aggregateid text, type text, payload jsonb)",
        )
        .unwrap();
        let (state, hint) = error_of(c, &format!("SELECT kafka.capture('w20_mine', topic => '{target}')"));
        assert_eq!(state, "42501", "capture into a granted topic");
        assert!(hint.unwrap().contains("kafka.topic_grants"));
        let forged = format!(
            "INSERT INTO kafka.capture_config (relid, table_name, kind, topic, key_attnums)
             VALUES ('w20_mine'::regclass, 'w20_mine', 'table', '{billing}.b', '{{1}}')"
        );
        assert_eq!(error_of(c, &forged).0, "42501", "a capture row into a granted topic");
        c.batch_execute(&format!(
            "SELECT kafka.capture_outbox('w20_relay', topic_pattern => '{billing}.%s')"
        ))
        .unwrap();
        let relayed = "INSERT INTO w20_relay VALUES (gen_random_uuid(), 'a', '1', 'forged', '{}')";
        let (state, hint) = error_of(c, relayed);
        assert_eq!(state, "42501", "a relayed row by a role that may not produce");
        assert!(hint.unwrap().contains("kafka_producer"));
        // No grants at all: the admin still is no producer.
        c.batch_execute("RESET ROLE; DELETE FROM kafka.topic_grants; SET ROLE e2e_w20_admin").unwrap();
        assert_eq!(error_of(c, relayed).0, "42501", "no grants: still not a producer");
        c.batch_execute(
            "RESET ROLE; SELECT kafka.uncapture('w20_relay'::regclass); SET ROLE e2e_w20_admin;
             SELECT kafka.capture('w20_mine', topic => 'w20_mine_events_topic')",
        )
        .unwrap();
        c.batch_execute("SELECT kafka.uncapture('w20_mine')").unwrap();
    });
    c.batch_execute(&format!(
        "INSERT INTO kafka.topic_grants VALUES ('e2e_w20_billing', '{billing}.*');
         SET ROLE e2e_w20_billing; SELECT kafka.produce('{target}', 'billing keeps its topic'); RESET ROLE;
         DROP OWNED BY e2e_w20_billing; DROP ROLE e2e_w20_billing"
    ))
    .unwrap();
    let mut reader = TopicReader::new(&target);
    let got = reader.read_at_least(1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text().as_deref(), Some("billing keeps its topic"));
}

/// Issue 20, weaknesses. `DROP OWNED BY` the extension's owner drops the extension: refused
/// while messages wait, as `DROP EXTENSION` is. A role that may drop nothing learns nothing from
/// trying: it meets PostgreSQL's own refusal (42501), not the count of waiting messages. (In a
/// scratch database with one waiting pack written by hand, so that nothing else can be dropped.)
#[test]
fn drops_of_the_extension_are_guarded_and_tell_only_who_may_drop_it() {
    let s = Scratch::new("e2e_w20_drops", "e2e_w20_drops_owner");
    let mut d = connect_to(&s.db);
    d.batch_execute(
        "CREATE EXTENSION kafka;
         INSERT INTO kafka.outbox (id, xid, messages, topics, payload)
         VALUES (1, pg_current_xact_id(), 1, '{w20}', '\\x00')",
    )
    .unwrap();
    d.batch_execute("SET ROLE e2e_w20_drops_owner").unwrap();
    for sql in ["DROP SCHEMA kafka CASCADE", "DROP EXTENSION kafka"] {
        let e = d.batch_execute(sql).expect_err(sql);
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "42501", "{sql}: {}", db.message());
        assert!(!db.message().contains("wait"), "{sql} told a role without rights: {}", db.message());
    }
    d.batch_execute("RESET ROLE").unwrap();
    let (state, hint) = error_of(&mut d, "DROP OWNED BY CURRENT_USER");
    assert_eq!(state, "55006", "DROP OWNED BY the extension's owner with messages waiting");
    assert!(hint.unwrap().contains("TRUNCATE kafka.outbox"));
    let still: i64 =
        d.query_one("SELECT count(*) FROM pg_extension WHERE extname = 'kafka'", &[]).unwrap().get(0);
    assert_eq!(still, 1);
    drop(d);
}

/// Issue 20, weakness: a key column name of any length is quoted back cut, as producers' input is.
#[test]
fn a_long_column_name_is_cut_in_the_error() {
    let mut c = pg();
    let t = topic("w20_long");
    c.batch_execute(&format!("CREATE TABLE {t} (id int PRIMARY KEY)")).unwrap();
    let e = c
        .batch_execute(&format!("SELECT kafka.capture('{t}', key_columns => ARRAY[repeat('k', 200000)])"))
        .expect_err("no such column");
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42703");
    assert!(db.message().len() < 2000, "a {}-byte message", db.message().len());
    c.batch_execute(&format!("DROP TABLE {t}")).unwrap();
}

/// A backfill reads a table whose columns are named like the aliases of its query (`n`, `r`):
/// the rows are still whole rows, and the last key is read back right.
#[test]
fn a_backfill_reads_tables_whose_columns_are_named_like_its_aliases() {
    let mut c = pg();
    let t = topic("w20_aliases");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (n int, r int, r_ text, PRIMARY KEY (n, r));
         INSERT INTO {t} SELECT i, -i, 'row' FROM generate_series(1, 5) i;
         SELECT kafka.capture('{t}', topic => '{t}');"
    ))
    .unwrap();
    c.batch_execute(&format!("CALL kafka.backfill('{t}', 2)")).unwrap();
    let done: i64 = c
        .query_one(&format!("SELECT rows_done FROM kafka.backfills WHERE \"table\" = '{t}'::regclass"), &[])
        .unwrap()
        .get(0);
    assert_eq!(done, 5);
    assert_eq!(TopicReader::new(&t).read_at_least(5).len(), 5);
    c.batch_execute(&format!("DROP TABLE {t}")).unwrap();
}
