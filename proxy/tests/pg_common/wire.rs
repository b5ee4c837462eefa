//! A raw PostgreSQL frontend for tests that need message shapes no client library sends
//! (several Executes before one Sync, a Close before the Sync, a Query inside a pipeline).
//! Shared by `proxy/tests/pg_pipeline.rs` and `integration-tests/tests/extended_pipeline.rs`
//! (included there by path).
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One backend message: its type byte and body.
#[derive(Debug)]
pub struct Reply {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Reply {
    /// The SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> String {
        assert_eq!(self.tag, b'E', "not an error: {self:?}");
        self.body
            .split(|byte| *byte == 0)
            .find_map(|field| field.strip_prefix(b"C"))
            .map(|code| String::from_utf8_lossy(code).into_owned())
            .expect("an error carries its SQLSTATE")
    }

    /// The text of a CommandComplete.
    pub fn command_tag(&self) -> String {
        assert_eq!(self.tag, b'C', "not a CommandComplete: {self:?}");
        String::from_utf8_lossy(self.body.strip_suffix(&[0]).unwrap_or(&self.body)).into_owned()
    }
}

pub struct Wire {
    stream: TcpStream,
}

pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn parse(sql: &str) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'P', &body)
}

/// Binds the unnamed statement to the unnamed portal, every parameter as text.
pub fn bind(params: &[&str]) -> Vec<u8> {
    bind_portal("", params)
}

/// Binds the unnamed statement to portal `portal` ("" for the unnamed one), every parameter
/// as text. A named portal outlives the Sync.
pub fn bind_portal(portal: &str, params: &[&str]) -> Vec<u8> {
    let mut body = portal.as_bytes().to_vec();
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for param in params {
        body.extend_from_slice(&(param.len() as i32).to_be_bytes());
        body.extend_from_slice(param.as_bytes());
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'B', &body)
}

pub fn execute() -> Vec<u8> {
    execute_portal("")
}

/// Executes portal `portal`, all its rows.
pub fn execute_portal(portal: &str) -> Vec<u8> {
    let mut body = portal.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&0i32.to_be_bytes());
    message(b'E', &body)
}

pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

pub fn flush() -> Vec<u8> {
    message(b'H', &[])
}

/// Describes the unnamed portal.
pub fn describe_portal() -> Vec<u8> {
    message(b'D', b"P\0")
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

impl Wire {
    pub async fn connect(addr: &str, user: &str, database: &str) -> Wire {
        let stream = TcpStream::connect(addr).await.expect("connects");
        let mut wire = Wire { stream };
        let mut body = 196_608i32.to_be_bytes().to_vec();
        body.extend_from_slice(format!("user\0{user}\0database\0{database}\0\0").as_bytes());
        let mut startup = (body.len() as i32 + 4).to_be_bytes().to_vec();
        startup.extend_from_slice(&body);
        wire.stream.write_all(&startup).await.expect("startup");
        wire.until_ready().await;
        wire
    }

    pub async fn send(&mut self, messages: &[Vec<u8>]) {
        self.stream
            .write_all(&messages.concat())
            .await
            .expect("sends");
    }

    /// The next message that answers a query (parameter statuses, notices and key data are
    /// skipped).
    pub async fn next(&mut self) -> Reply {
        loop {
            let mut header = [0u8; 5];
            tokio::time::timeout(Duration::from_secs(30), self.stream.read_exact(&mut header))
                .await
                .expect("an answer within 30 s (a missing flush would hang here)")
                .expect("reads");
            let length = i32::from_be_bytes(header[1..5].try_into().expect("4 bytes")) as usize;
            let mut body = vec![0u8; length - 4];
            self.stream.read_exact(&mut body).await.expect("reads body");
            if !matches!(header[0], b'S' | b'N' | b'K') {
                return Reply {
                    tag: header[0],
                    body,
                };
            }
        }
    }

    /// Every answer up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        loop {
            let reply = self.next().await;
            let ready = reply.tag == b'Z';
            replies.push(reply);
            if ready {
                return replies;
            }
        }
    }
}

pub fn tags(replies: &[Reply]) -> String {
    replies.iter().map(|reply| reply.tag as char).collect()
}

/// Closes the unnamed portal.
pub fn close_portal() -> Vec<u8> {
    message(b'C', b"P\0")
}

/// The ReadyForQuery status of the last reply (`I`, `T` or `E`).
pub fn ready_status(replies: &[Reply]) -> char {
    let last = replies.last().expect("replies");
    assert_eq!(
        last.tag, b'Z',
        "the last reply is ReadyForQuery: {replies:?}"
    );
    last.body[0] as char
}
