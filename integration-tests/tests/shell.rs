//! `paxsql shell` through a follower, compared with the real `sqlite3` command on the same
//! data: every dot-command, the output modes, `.dump` (loadable by `sqlite3`, same content),
//! `.read`, `.import`, and the exit status scripts rely on.
//!
//! `sqlite3` must be installed (Debian package `sqlite3`); the test fails without it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use paxsql_integration_tests::{paxsql_bin, Cluster};

/// Data both sides load. REALs here display and dump alike in both (see `REALS`).
const SETUP: &str = "\
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, note TEXT);
INSERT INTO items VALUES(1,'apple',1.5,'it''s fresh'),(2,'pear',2.0,NULL),
  (3,'ünïcode',1e20,'comma, inside'),(4,'two
lines',0.25,'  leading spaces'),(5,'quote \"q\"',-3.0,'');
CREATE INDEX items_name ON items(name);
CREATE TABLE \"odd name\"(x, \"y z\");
INSERT INTO \"odd name\" VALUES(1,'a'),(NULL,'b');
CREATE TABLE seq(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);
INSERT INTO seq(v) VALUES('first'),('second');
DELETE FROM seq WHERE id = 2;
CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 2;
CREATE TRIGGER seq_guard BEFORE DELETE ON items BEGIN SELECT RAISE(ABORT, 'items are kept'); END;
CREATE TABLE blobs(k INTEGER PRIMARY KEY, b BLOB);
INSERT INTO blobs VALUES(1,X'00FF10'),(2,X''),(3,NULL);
";

/// REALs whose dump text differs between `quote()` and `sqlite3` (same value, other digits).
const REALS: &str = "CREATE TABLE reals(r REAL);\nINSERT INTO reals VALUES(0.1),(0.30000000000000004),(1e-7),(123456.789);\n";

/// Dot-commands and queries whose output formats are the same in both shells.
const SCRIPT: &str = "\
.tables
.tables i%
.schema items
.schema
.indexes
.indexes items
SELECT id, name, price, note FROM items ORDER BY id;
.headers on
SELECT id, name, price, note FROM items ORDER BY id;
.mode csv
SELECT id, name, price, note FROM items ORDER BY id;
.mode column
SELECT id, name, price, note FROM items ORDER BY id;
SELECT * FROM \"odd name\";
.mode table
SELECT id, name, price, note FROM items ORDER BY id;
.mode json
SELECT id, name, price, note FROM items ORDER BY id;
.headers off
.mode list
SELECT * FROM cheap ORDER BY id;
.mode column
SELECT id, price FROM items ORDER BY id;
.mode list
.dump items
.dump seq
.dump odd%
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shell_through_a_follower_behaves_like_sqlite3() {
    let sqlite3 = require_sqlite3();
    let work = tempfile::tempdir().expect("tempdir");
    let reference = work.path().join("reference.db");

    // Phase 1: the same data in a local sqlite3 file and, through the shell on a follower,
    // in a paxsql cluster.
    let cluster = Cluster::start(3, &[]).await.expect("cluster starts");
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let follower = cluster
        .nodes
        .iter()
        .find(|node| node.id != master)
        .expect("a follower");
    let shell = ShellTarget {
        port: follower.sql_port,
        http: follower.http_addr(),
    };
    let setup = format!("{SETUP}{REALS}");
    assert_success(
        &run_stdin(&sqlite3, &[path_arg(&reference)], &setup),
        "sqlite3 setup",
    );
    assert_success(&shell.run(&[], &setup), "paxsql shell setup");

    // Phase 2: every shared dot-command and mode prints what sqlite3 prints.
    let expected = run_stdin(&sqlite3, &[path_arg(&reference)], SCRIPT);
    assert_success(&expected, "sqlite3 script");
    let actual = shell.run(&[], SCRIPT);
    assert_success(&actual, "paxsql shell script");
    assert_same_text(&expected.stdout, &actual.stdout, "the scripted session");

    // Phase 3: the full `.dump` loads into sqlite3 and holds identical content (sqlite3's
    // own dump of both files matches, reals and blobs included); no paxsql table leaks.
    let dump = shell.run(&["-c", ".dump"], "");
    assert_success(&dump, "paxsql .dump");
    let dump_text = String::from_utf8(dump.stdout.clone()).expect("utf-8 dump");
    assert!(
        !dump_text.contains("_paxsql"),
        "the dump shows paxsql's tables:\n{dump_text}"
    );
    let loaded = work.path().join("loaded.db");
    assert_success(
        &run_stdin(&sqlite3, &[path_arg(&loaded)], &dump_text),
        "sqlite3 loads the dump",
    );
    let original_dump = run_stdin(&sqlite3, &[path_arg(&reference), ".dump".into()], "");
    let loaded_dump = run_stdin(&sqlite3, &[path_arg(&loaded), ".dump".into()], "");
    assert_same_text(
        &original_dump.stdout,
        &loaded_dump.stdout,
        "sqlite3's dump of the loaded paxsql dump",
    );

    // Phase 4: `.read` and `.import` (a new table from the header, then into an existing table).
    let csv = work.path().join("people.csv");
    std::fs::write(
        &csv,
        "name,city,note\nAda,London,\"says \"\"hi\"\"\"\nLinus,Helsinki,\"two\nlines\"\nZoë,\"Paris, FR\",\n",
    )
    .expect("write csv");
    let read_file = work.path().join("commands.sql");
    std::fs::write(
        &read_file,
        format!(
            ".import --csv {csv} people\n.import --csv --skip 1 {csv} people\nSELECT count(*) FROM people;\n.headers on\n.mode csv\nSELECT * FROM people;\n.schema people\n.dump people\n",
            csv = csv.display()
        ),
    )
    .expect("write .read file");
    let read_command = format!(".read {}\n", read_file.display());
    let expected = run_stdin(&sqlite3, &[path_arg(&reference)], &read_command);
    assert_success(&expected, "sqlite3 .read");
    let actual = shell.run(&[], &read_command);
    assert_success(&actual, "paxsql .read");
    assert_same_text(&expected.stdout, &actual.stdout, ".read with .import");

    // Phase 5: paxsql's own commands.
    let status = shell.run(&["--http", &shell.http, "-c", ".status"], "");
    assert_success(&status, ".status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&format!("master node {master}")), "{text}");
    assert!(text.contains("role follower"), "{text}");
    assert!(text.contains("apply lag"), "{text}");
    let learned = shell.run(&["-c", ".status"], "");
    assert!(
        !learned.status.success(),
        "without --http on non-dev-cluster ports .status must fail clearly"
    );
    let local = shell.run(
        &[],
        ".consistency local\n.consistency\nSELECT count(*) FROM items;\n.timer on\nSELECT 1;\n",
    );
    assert_success(&local, ".consistency and .timer");
    let text = String::from_utf8_lossy(&local.stdout);
    assert!(text.starts_with("local\n5\n1\nRun Time: real "), "{text}");

    // Phase 6: exit status. A script stops at its first error and exits non-zero; `.quit`
    // ends the input early.
    let failing = shell.run(
        &[],
        "CREATE TABLE before_error(x);\nSELECT nope FROM items;\nCREATE TABLE after_error(x);\n",
    );
    assert!(
        !failing.status.success(),
        "an SQL error must fail the script"
    );
    assert!(String::from_utf8_lossy(&failing.stderr).contains("no such column"));
    let failing_c = shell.run(&["-c", "SELECT * FROM missing_table"], "");
    assert!(
        !failing_c.status.success(),
        "-c with an error must exit non-zero"
    );
    assert!(!shell
        .run(&["-c", ".consistency bogus"], "")
        .status
        .success());
    let quit = shell.run(&[], "SELECT 1;\n.quit\nSELECT 2;\n");
    assert_success(&quit, ".quit");
    assert_eq!(String::from_utf8_lossy(&quit.stdout), "1\n");
    let tables = shell.run(&["-c", ".tables"], "");
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(tables.contains("before_error"), "{tables}");
    assert!(
        !tables.contains("after_error"),
        "the script went on after an error: {tables}"
    );
    assert!(!tables.contains("_paxsql"), "{tables}");
}

struct ShellTarget {
    port: u16,
    http: String,
}

impl ShellTarget {
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut all: Vec<String> = vec!["shell".into(), "--port".into(), self.port.to_string()];
        all.extend(args.iter().map(|arg| arg.to_string()));
        run_stdin(&paxsql_bin(), &all, stdin)
    }
}

/// The `sqlite3` command; the test fails (never skips) without it.
fn require_sqlite3() -> PathBuf {
    let found = Command::new("sqlite3").arg("--version").output();
    assert!(
        found.is_ok_and(|output| output.status.success()),
        "the sqlite3 command is required: install the Debian package `sqlite3` (CI does)"
    );
    PathBuf::from("sqlite3")
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

fn run_stdin(program: &Path, args: &[String], stdin: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for the command")
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Equal text, or a line-by-line report of the first difference.
fn assert_same_text(expected: &[u8], actual: &[u8], what: &str) {
    let expected = String::from_utf8_lossy(expected);
    let actual = String::from_utf8_lossy(actual);
    if expected == actual {
        return;
    }
    let first_difference = expected
        .split_inclusive('\n')
        .zip(actual.split_inclusive('\n'))
        .position(|(left, right)| left != right)
        .unwrap_or(expected.lines().count().min(actual.lines().count()));
    panic!(
        "{what}: paxsql differs from sqlite3 at line {}\n--- sqlite3:\n{expected}\n--- paxsql:\n{actual}",
        first_difference + 1
    );
}
