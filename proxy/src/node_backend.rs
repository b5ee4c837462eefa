//! [`NodeBackend`]: this node's own groups as a [`Backend`]. Writes and master reads succeed
//! only while this node is the serving master; otherwise they fail with `NotMaster`, unexecuted,
//! which tells the routing layer (or a forwarding follower) to try the real master.

use std::collections::BTreeMap;

use async_trait::async_trait;
use paxsql_replicator::service::{SqlService, SqlTransaction};
use paxsql_replicator::sqlite::types::{
    Column, Consistency, SqlError, SqlErrorKind, StatementRequest, StatementResult,
};
use paxsql_replicator::sqlite::ReadCancel;

use crate::backend::{Backend, Transaction};

pub struct NodeBackend {
    groups: BTreeMap<String, SqlService>,
}

impl NodeBackend {
    pub fn new(groups: BTreeMap<String, SqlService>) -> Self {
        NodeBackend { groups }
    }

    pub fn service(&self, group: &str) -> Result<&SqlService, SqlError> {
        self.groups.get(group).ok_or_else(|| {
            SqlError::new(
                SqlErrorKind::Other,
                format!("database \"{group}\" is not served by this node"),
            )
        })
    }

    pub fn services(&self) -> &BTreeMap<String, SqlService> {
        &self.groups
    }
}

#[async_trait]
impl Backend for NodeBackend {
    fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    async fn execute_write(
        &self,
        group: &str,
        statements: Vec<StatementRequest>,
    ) -> Result<Vec<StatementResult>, SqlError> {
        self.service(group)?.write(statements).await
    }

    async fn read(
        &self,
        group: &str,
        statement: StatementRequest,
        consistency: Consistency,
    ) -> Result<StatementResult, SqlError> {
        self.service(group)?.read(statement, consistency).await
    }

    async fn read_cancelable(
        &self,
        group: &str,
        statement: StatementRequest,
        consistency: Consistency,
        cancel: ReadCancel,
    ) -> Result<StatementResult, SqlError> {
        self.service(group)?
            .read_cancelable(statement, consistency, cancel)
            .await
    }

    async fn begin(&self, group: &str) -> Result<Box<dyn Transaction>, SqlError> {
        let transaction = self.service(group)?.begin().await?;
        Ok(Box::new(NodeTransaction {
            inner: Some(transaction),
        }))
    }

    async fn is_read_only(&self, group: &str, sql: &str) -> Result<bool, SqlError> {
        self.service(group)?.is_read_only(sql).await
    }

    async fn describe(&self, group: &str, sql: &str) -> Result<Vec<Column>, SqlError> {
        self.service(group)?.describe(sql).await
    }
}

/// A transaction on this node's writer. Dropping it rolls back (see [`SqlTransaction`]).
struct NodeTransaction {
    inner: Option<SqlTransaction>,
}

impl NodeTransaction {
    fn open(&mut self) -> Result<&mut SqlTransaction, SqlError> {
        self.inner
            .as_mut()
            .ok_or_else(|| SqlError::new(SqlErrorKind::Other, "the transaction has ended"))
    }
}

#[async_trait]
impl Transaction for NodeTransaction {
    async fn execute(&mut self, statement: StatementRequest) -> Result<StatementResult, SqlError> {
        self.open()?.execute(statement).await
    }

    async fn describe(&mut self, sql: &str) -> Result<Vec<Column>, SqlError> {
        self.open()?.describe(sql).await
    }

    async fn commit(mut self: Box<Self>) -> Result<(), SqlError> {
        match self.inner.take() {
            Some(transaction) => transaction.commit().await,
            None => Err(SqlError::new(
                SqlErrorKind::Other,
                "the transaction has ended",
            )),
        }
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), SqlError> {
        match self.inner.take() {
            Some(transaction) => transaction.rollback().await,
            None => Ok(()),
        }
    }
}
