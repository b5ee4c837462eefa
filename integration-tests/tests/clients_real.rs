//! Real PostgreSQL clients against a FOLLOWER of a real three-node cluster: psql, Python
//! psycopg 3 and pgbench. They are required: a missing tool fails the test (`.ci/run`
//! installs postgresql-client, postgresql-contrib and psycopg[binary]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use paxsql_integration_tests::sql::connect;
use paxsql_integration_tests::Cluster;

/// A running cluster and the SQL port of one of its followers.
async fn cluster_and_follower() -> (Cluster, u16) {
    let cluster = Cluster::start(3, &[]).await.expect("cluster starts");
    let port = cluster
        .wait_for_follower(Duration::from_secs(30))
        .await
        .expect("a follower")
        .sql_port;
    (cluster, port)
}

/// Runs `program` with libpq's environment pointing at `port`; panics if it cannot start.
fn run(program: &str, port: u16, args: &[&str], directory: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(directory)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", "paxsql")
        .env("PGDATABASE", "main")
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD")
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {program} ({error}): this test needs it; .ci/run installs it (apt-get install postgresql-client postgresql-contrib; pip install 'psycopg[binary]')")
        })
}

/// Runs and requires exit status 0; returns stdout.
fn run_ok(program: &str, port: u16, args: &[&str], directory: &Path) -> String {
    let output = run(program, port, args, directory);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

fn psql(port: u16, args: &[&str], directory: &Path) -> String {
    let mut all = vec!["-X", "-v", "ON_ERROR_STOP=1"];
    all.extend_from_slice(args);
    run_ok("psql", port, &all, directory)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_commands_scripts_and_describes_tables_through_a_follower() {
    let (_cluster, port) = cluster_and_follower().await;
    let directory = tempfile::tempdir().expect("temp dir");
    let dir = directory.path();

    // Phase 1: `psql -c`, one command per flag.
    let out = psql(
        port,
        &[
            "-c",
            "CREATE TABLE fruit (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL DEFAULT 1.5)",
            "-c",
            "INSERT INTO fruit (id, name) VALUES (1, 'apple'), (2, 'pear')",
            "-c",
            "SELECT name, price FROM fruit ORDER BY id",
        ],
        dir,
    );
    assert!(out.contains("CREATE TABLE"), "{out}");
    assert!(out.contains("INSERT 0 2"), "{out}");
    assert!(out.contains(" apple | "), "{out}");
    assert!(out.contains("(2 rows)"), "{out}");

    // Phase 2: `psql -f script.sql`: a transaction, a multi-statement line, a variable.
    let script = dir.join("script.sql");
    std::fs::write(
        &script,
        "\\set fruit_id 3\n\
         BEGIN;\n\
         INSERT INTO fruit (id, name, price) VALUES (:fruit_id, 'plum', 2.25);\n\
         UPDATE fruit SET price = price * 2 WHERE id = 1;\n\
         SELECT count(*) AS inside FROM fruit;\n\
         COMMIT;\n\
         INSERT INTO fruit (id, name) VALUES (4, 'fig'); DELETE FROM fruit WHERE id = 2;\n\
         SELECT id, name, price FROM fruit ORDER BY id;\n",
    )
    .expect("write script");
    let out = psql(port, &["-f", &script.display().to_string()], dir);
    assert!(out.contains("BEGIN\nINSERT 0 1\nUPDATE 1"), "{out}");
    assert!(out.contains("COMMIT"), "{out}");
    for expected in [
        "  1 | apple |     3",
        "  3 | plum  |  2.25",
        "  4 | fig   |   1.5",
        "(3 rows)",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    // Phase 3: an error stops a script with ON_ERROR_STOP and reports it.
    let bad = run(
        "psql",
        port,
        &[
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "INSERT INTO fruit (id) VALUES (9)",
        ],
        dir,
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("NOT NULL"), "{stderr}");

    // Phase 4: `\dt` lists tables (and hides paxsql's own), `\d TABLE` shows columns.
    psql(
        port,
        &[
            "-c",
            "CREATE VIEW cheap AS SELECT * FROM fruit WHERE price < 2",
        ],
        dir,
    );
    let out = psql(port, &["-c", "\\dt"], dir);
    assert!(out.contains("List of relations"), "{out}");
    assert!(out.contains(" public | fruit | table | "), "{out}");
    assert!(!out.contains("_paxsql"), "paxsql tables are hidden: {out}");
    assert!(!out.contains("cheap"), "\\dt lists tables only: {out}");
    let out = psql(port, &["-c", "\\d"], dir);
    assert!(out.contains(" public | cheap | view "), "{out}");
    let out = psql(port, &["-c", "\\d fruit"], dir);
    assert!(out.contains("Table \"public.fruit\""), "{out}");
    assert!(
        out.contains(" id     | integer |           | not null | "),
        "{out}"
    );
    assert!(
        out.contains(" name   | text    |           | not null | "),
        "{out}"
    );
    assert!(
        out.contains(" price  | real    |           |          | 1.5"),
        "{out}"
    );

    // Phase 5: psql's unaligned, tuples-only output for scripting.
    let out = psql(
        port,
        &[
            "-A",
            "-t",
            "-c",
            "SELECT group_concat(name, ',') FROM fruit",
        ],
        dir,
    );
    assert_eq!(out.trim(), "apple,plum,fig");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_runs_ddl_parameters_transactions_and_reports_sqlstates() {
    let (_cluster, port) = cluster_and_follower().await;
    let directory = tempfile::tempdir().expect("temp dir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/psycopg_smoke.py");
    let conninfo = format!("host=127.0.0.1 port={port} dbname=main user=paxsql connect_timeout=10");
    let out = run_ok(
        "python3",
        port,
        &[&script.display().to_string(), &conninfo],
        directory.path(),
    );
    assert_eq!(out.trim(), "ok");
}

/// pgbench's summary line `name: N…` as a number.
fn pgbench_figure(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name:?} in pgbench output:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_a_custom_script_in_every_query_mode_without_failures() {
    let (cluster, port) = cluster_and_follower().await;
    let directory = tempfile::tempdir().expect("temp dir");
    let dir = directory.path();
    // pgbench's own init uses PostgreSQL-only DDL: make the tables ourselves.
    psql(
        port,
        &[
            "-c",
            "CREATE TABLE accounts (aid INTEGER PRIMARY KEY, abalance INTEGER NOT NULL DEFAULT 0)",
            "-c",
            "CREATE TABLE history (id INTEGER PRIMARY KEY, aid INTEGER NOT NULL, delta INTEGER NOT NULL)",
            "-c",
            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 100) \
             INSERT INTO accounts (aid) SELECT x FROM s",
        ],
        dir,
    );
    // `\set` variables reach the server as literals (simple) or as parameters (extended,
    // prepared). One transaction per run of the script, and one autocommit script.
    std::fs::write(
        dir.join("transfer.sql"),
        "\\set aid random(1, 100)\n\
         \\set delta random(1, 1000)\n\
         BEGIN;\n\
         UPDATE accounts SET abalance = abalance + :delta WHERE aid = :aid;\n\
         SELECT abalance FROM accounts WHERE aid = :aid;\n\
         INSERT INTO history (aid, delta) VALUES (:aid, :delta);\n\
         END;\n",
    )
    .expect("write script");
    std::fs::write(
        dir.join("autocommit.sql"),
        "\\set aid random(1, 100)\n\
         INSERT INTO history (aid, delta) VALUES (:aid, 0);\n\
         SELECT abalance FROM accounts WHERE aid = :aid;\n",
    )
    .expect("write script");
    let mut transfers = 0;
    for mode in ["simple", "extended", "prepared"] {
        for (script, transactions) in [("transfer.sql", true), ("autocommit.sql", false)] {
            // An interactive transaction open while another value (such as the master's lease
            // renewal) is chosen ends with 40001; pgbench retries those, as PostgreSQL clients
            // retry serialization failures.
            let out = run_ok(
                "pgbench",
                port,
                &[
                    "-n",
                    "-f",
                    script,
                    "-c",
                    "4",
                    "-t",
                    "25",
                    "-M",
                    mode,
                    "--max-tries",
                    "20",
                ],
                dir,
            );
            assert_eq!(
                pgbench_figure(&out, "number of failed transactions"),
                0,
                "{mode} {script}:\n{out}"
            );
            assert_eq!(
                pgbench_figure(&out, "number of transactions actually processed"),
                100,
                "{mode} {script}:\n{out}"
            );
            if transactions {
                transfers += 100;
            }
        }
    }
    // Every committed transfer moved money and left one history row; nothing half-done.
    let client = connect(&format!("127.0.0.1:{port}"), "main")
        .await
        .expect("connect");
    let row = client
        .query_one(
            "SELECT CAST((SELECT sum(abalance) FROM accounts) AS INTEGER), \
             CAST((SELECT sum(delta) FROM history) AS INTEGER), \
             CAST((SELECT count(*) FROM history WHERE delta > 0) AS INTEGER), \
             CAST((SELECT count(*) FROM history WHERE delta = 0) AS INTEGER)",
            &[],
        )
        .await
        .expect("totals");
    let (balance, deltas, moves, plain): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(balance, deltas, "balances match the history");
    assert_eq!(moves, transfers, "one history row per committed transfer");
    assert_eq!(plain, 300, "one row per autocommit script run");
    drop(cluster);
}
