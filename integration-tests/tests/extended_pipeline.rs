//! Extended-protocol pipelines over the raw wire, against a FOLLOWER of a three-node cluster:
//! the Executes a client sends before one Sync are one transaction (a JDBC `executeBatch`, a
//! psycopg pipeline), answered in message order; a lone Execute per Sync commits alone; a
//! Flush answers a held write at once. tokio-postgres cannot send these shapes (it syncs every
//! statement), so this file speaks the protocol itself.

use std::time::Duration;

use paxsql_integration_tests::sql::{connect, connect_local, table_hash};
use paxsql_integration_tests::Cluster;

#[path = "../../proxy/tests/pg_common/wire.rs"]
mod wire;

use wire::{bind, describe_portal, execute, flush, parse, query, sync, tags, Wire};

async fn cluster_and_follower() -> (Cluster, String) {
    let cluster = Cluster::start(3, &["--lease-ms", "1000"])
        .await
        .expect("cluster starts");
    let addr = cluster
        .wait_for_follower(Duration::from_secs(30))
        .await
        .expect("a follower")
        .sql_addr();
    let client = connect(&addr, "main").await.expect("connects");
    client
        .batch_execute("CREATE TABLE p (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .await
        .expect("creates the table");
    (cluster, addr)
}

async fn ids(addr: &str) -> Vec<i64> {
    let client = connect(addr, "main").await.expect("connects");
    client
        .query("SELECT id FROM p ORDER BY id", &[])
        .await
        .expect("reads")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executes_before_one_sync_are_one_transaction() {
    let (cluster, addr) = cluster_and_follower().await;
    let mut wire = Wire::connect(&addr, "paxsql", "main").await;

    // A JDBC executeBatch: one Parse, then Bind/Execute per row, one Sync.
    let insert = parse("INSERT INTO p VALUES ($1, $2)");
    wire.send(&[
        insert.clone(),
        bind(&["1", "a"]),
        execute(),
        bind(&["2", "b"]),
        execute(),
        bind(&["3", "c"]),
        execute(),
        sync(),
    ])
    .await;
    let replies = wire.until_ready().await;
    assert_eq!(
        tags(&replies),
        "12C2C2CZ",
        "answers in message order: {replies:?}"
    );
    assert_eq!(replies[2].command_tag(), "INSERT 0 1");
    assert_eq!(
        replies.last().expect("ready").body,
        b"I",
        "idle after the Sync"
    );
    assert_eq!(ids(&addr).await, [1, 2, 3]);

    // An error at the third Execute: the two before it roll back with it, the one after it
    // is skipped (no answer), and the Sync leaves the session idle and usable.
    wire.send(&[
        insert.clone(),
        bind(&["4", "d"]),
        execute(),
        bind(&["5", "e"]),
        execute(),
        bind(&["1", "duplicate"]),
        execute(),
        bind(&["6", "f"]),
        execute(),
        sync(),
    ])
    .await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "12C2C2EZ", "{replies:?}");
    assert_eq!(replies[6].sqlstate(), "23505");
    assert_eq!(replies.last().expect("ready").body, b"I");
    assert_eq!(
        ids(&addr).await,
        [1, 2, 3],
        "nothing of the failed pipeline was applied"
    );

    // The session goes on: the next pipeline commits.
    wire.send(&[
        insert,
        bind(&["7", "g"]),
        execute(),
        bind(&["8", "h"]),
        execute(),
        sync(),
    ])
    .await;
    assert_eq!(tags(&wire.until_ready().await), "12C2CZ");
    assert_eq!(ids(&addr).await, [1, 2, 3, 7, 8]);

    // A bulk load longer than one transaction may hold (1,024 statements) loads, in chunks.
    let mut messages = vec![parse("INSERT INTO p VALUES ($1, $2)")];
    let ids_to_load: Vec<String> = (100..1_200).map(|id: i32| id.to_string()).collect();
    for id in &ids_to_load {
        messages.push(bind(&[id, "bulk"]));
        messages.push(execute());
    }
    messages.push(sync());
    wire.send(&messages).await;
    let replies = wire.until_ready().await;
    assert!(
        replies.iter().all(|reply| reply.tag != b'E'),
        "no error: {:?}",
        replies.iter().find(|reply| reply.tag == b'E')
    );
    assert_eq!(ids(&addr).await.len(), 5 + ids_to_load.len());

    cluster.settle().await;
    let mut hashes = Vec::new();
    for node in &cluster.nodes {
        let local = connect_local(&node.sql_addr(), "main")
            .await
            .expect("connects");
        hashes.push(table_hash(&local, "p").await.expect("hashes"));
    }
    assert!(
        hashes.windows(2).all(|pair| pair[0] == pair[1]),
        "every replica holds the same rows: {hashes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_per_sync_commits_alone_and_a_flush_answers_at_once() {
    let (_cluster, addr) = cluster_and_follower().await;
    let mut wire = Wire::connect(&addr, "paxsql", "main").await;
    let insert = parse("INSERT INTO p VALUES ($1, $2)");

    // Three statements, each with its own Sync (how tokio-postgres and pgbench send them):
    // the failing one takes nothing else with it.
    wire.send(&[
        insert.clone(),
        bind(&["1", "a"]),
        execute(),
        sync(),
        bind(&["1", "duplicate"]),
        execute(),
        sync(),
        bind(&["2", "b"]),
        execute(),
        sync(),
    ])
    .await;
    let first = wire.until_ready().await;
    let second = wire.until_ready().await;
    let third = wire.until_ready().await;
    assert_eq!(
        (tags(&first), tags(&second), tags(&third)),
        ("12CZ".into(), "2EZ".into(), "2CZ".into())
    );
    assert_eq!(second[1].sqlstate(), "23505");
    assert_eq!(second.last().expect("ready").body, b"I");
    assert_eq!(ids(&addr).await, [1, 2]);

    // A Flush after an Execute: the client gets the answer before it sends its Sync, and the
    // Executes after it join the same transaction.
    wire.send(&[insert, bind(&["3", "c"]), execute(), flush()])
        .await;
    let mut answered = Vec::new();
    for _ in 0..3 {
        answered.push(wire.next().await);
    }
    assert_eq!(tags(&answered), "12C", "{answered:?}");
    wire.send(&[
        bind(&["4", "d"]),
        execute(),
        bind(&["3", "again"]),
        execute(),
        sync(),
    ])
    .await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "2C2EZ", "{replies:?}");
    assert_eq!(
        replies.last().expect("ready").body,
        b"I",
        "rolled back, idle"
    );
    assert_eq!(
        ids(&addr).await,
        [1, 2],
        "the error rolled back the whole pipeline, the write answered at the Flush included"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_writes_join_the_pipeline_a_query_ends_it_and_a_disconnect_drops_it() {
    let (_cluster, addr) = cluster_and_follower().await;
    let mut wire = Wire::connect(&addr, "paxsql", "main").await;

    // INSERT … RETURNING with a Describe per row (JDBC with generated keys): rows come back,
    // and the failure of the third rolls back the first two.
    let returning = parse("INSERT INTO p VALUES ($1, $2) RETURNING id");
    wire.send(&[
        returning,
        bind(&["10", "x"]),
        describe_portal(),
        execute(),
        bind(&["11", "y"]),
        describe_portal(),
        execute(),
        bind(&["10", "duplicate"]),
        execute(),
        sync(),
    ])
    .await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "12TDC2TDC2EZ", "{replies:?}");
    assert_eq!(replies[4].command_tag(), "INSERT 0 1");
    assert_eq!(replies.last().expect("ready").body, b"I");
    assert!(
        ids(&addr).await.is_empty(),
        "the whole pipeline rolled back"
    );

    // A simple Query ends an unsynced pipeline as a Sync would: its writes commit, then the
    // Query runs and sees them.
    wire.send(&[
        parse("INSERT INTO p VALUES ($1, $2)"),
        bind(&["12", "z"]),
        execute(),
        bind(&["13", "w"]),
        execute(),
        query("SELECT count(*) FROM p"),
    ])
    .await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "12C2CTDCZ", "{replies:?}");
    assert_eq!(replies.last().expect("ready").body, b"I");
    assert_eq!(ids(&addr).await, [12, 13]);

    // A pipeline whose client goes away before its Sync is never applied, even a write the
    // client saw answered (at a Flush, inside the implicit transaction).
    wire.send(&[
        parse("INSERT INTO p VALUES ($1, $2)"),
        bind(&["14", "v"]),
        execute(),
        flush(),
    ])
    .await;
    let replies = [wire.next().await, wire.next().await, wire.next().await];
    assert_eq!(tags(&replies), "12C");
    drop(wire);
    // The disconnect rolled the transaction back and freed the master's writer: the next
    // write goes through.
    let client = connect(&addr, "main").await.expect("connects");
    tokio::time::timeout(
        Duration::from_secs(10),
        client.execute("INSERT INTO p VALUES (15, 'u')", &[]),
    )
    .await
    .expect("the writer is free within 10 s")
    .expect("inserts");
    assert_eq!(ids(&addr).await, [12, 13, 15]);
}
