//! How the writer finishes a batch and sees its value through Paxos: the lease renewals
//! chosen while it ran are absorbed, the value is proposed for the next instance, and the
//! outcome decides between COMMIT, running again and failing.

use paxsql_schema::{paxos_value::Payload, BinlogBatch};

use super::{applied, handle_busy, not_master, WriterContext, WriterMessage};
use crate::paxos::{InstanceId, ProposalOutcome};
use crate::runtime::error::RuntimeError;
use crate::runtime::group::Delivered;
use crate::sqlite::{Batch, PendingCommit, SqlError, SqlErrorKind};

/// How a proposed value ended.
enum Resolution {
    Committed(InstanceId),
    /// Another value won: roll back, apply it, run again.
    OtherChosen(Delivered),
    /// Not proposed, or refused: the error tells the clients.
    Failed(SqlError),
}

/// How a finished batch ended.
pub(super) enum BatchEnd {
    Committed,
    /// Other values were chosen first: the batch rolled back, and they wait in `deferred` to
    /// be applied before anything else. `user_tables_changed` when one of them is SQL.
    Overtaken {
        user_tables_changed: bool,
    },
    /// Not proposed, or refused: the error tells the clients.
    Failed(SqlError),
}

/// Finishes `batch` and sees its value through to an outcome. First it moves the batch onto
/// this node's lease renewals chosen while it ran ([`Batch::absorb_lease_renewal`]): a batch
/// that runs longer than the renewal interval would otherwise lose its instance to every
/// renewal. Anything else chosen meanwhile overtakes it.
pub(super) fn finish_and_propose(context: &mut WriterContext, mut batch: Batch<'_>) -> BatchEnd {
    let mut absorbed = Vec::new();
    // A dead batch only fails, with its own error (`finish` below), not by being overtaken.
    if !batch.is_dead() {
        while let Some(delivered) = context.ready_delivery() {
            context.deferred.push_back(delivered);
        }
        while let Some(next) = context.deferred.front() {
            let (instance_id, checksum_after) = (next.instance_id, next.checksum_after);
            if !batch.absorb_lease_renewal(
                instance_id,
                &next.value,
                checksum_after,
                context.node_id,
            ) {
                break;
            }
            absorbed.extend(context.deferred.pop_front());
        }
        if !context.deferred.is_empty() {
            drop(batch);
            let user_tables_changed = !context.deferred.iter().all(leaves_user_tables_alone);
            apply_first(context, absorbed, None);
            return BatchEnd::Overtaken {
                user_tables_changed,
            };
        }
    }
    let (value, pending) = match batch.finish() {
        Ok(finished) => finished,
        Err(error) => {
            apply_first(context, absorbed, None);
            return BatchEnd::Failed(error);
        }
    };
    let base = value.base_instance;
    match propose_and_wait(context, value, pending, base) {
        Resolution::Committed(instance_id) => {
            applied(context, instance_id);
            BatchEnd::Committed
        }
        Resolution::OtherChosen(delivered) => {
            let user_tables_changed = !leaves_user_tables_alone(&delivered);
            apply_first(context, absorbed, Some(delivered));
            BatchEnd::Overtaken {
                user_tables_changed,
            }
        }
        Resolution::Failed(error) => {
            apply_first(context, absorbed, None);
            BatchEnd::Failed(error)
        }
    }
}

/// Whether a chosen value leaves user tables untouched (a lease, a membership change, the
/// cluster init): a transaction open across it still sees the state it ran against.
pub(super) fn leaves_user_tables_alone(delivered: &Delivered) -> bool {
    !matches!(delivered.value.payload, Some(Payload::Binlog(_)))
}

/// Queues chosen values to be applied before anything else (the run loop applies `deferred`
/// first): the lease renewals a rolled-back batch had recorded inside its transaction (the
/// rollback undid them), then the value that overtook the batch, if one did.
fn apply_first(context: &mut WriterContext, absorbed: Vec<Delivered>, then: Option<Delivered>) {
    if let Some(delivered) = then {
        context.deferred.push_front(delivered);
    }
    for delivered in absorbed.into_iter().rev() {
        context.deferred.push_front(delivered);
    }
}

/// Proposes `value` for instance `base + 1` and waits for that instance's outcome, queueing
/// other work meanwhile. Commits or rolls back `pending` before returning.
fn propose_and_wait(
    context: &mut WriterContext,
    value: BinlogBatch,
    pending: PendingCommit<'_>,
    base: InstanceId,
) -> Resolution {
    let instance_id = base + 1;
    let token = context.next_token;
    context.next_token += 1;
    let group = context.group.clone();
    let sender = context.sender.clone();
    // The value goes to Paxos as it is, no copy kept: its delivery says whether it was ours.
    let payload = Payload::Binlog(value);
    context.runtime.spawn(async move {
        let outcome = group.propose(payload, Some(instance_id)).await;
        let _ = sender
            .send(WriterMessage::Proposed { token, outcome })
            .await;
    });
    loop {
        let Some(message) = context.next_message() else {
            pending.rollback();
            return Resolution::Failed(SqlError::new(
                SqlErrorKind::Unknown,
                "the node is stopping; the write's outcome is unknown",
            ));
        };
        match message {
            WriterMessage::Delivered(delivered) => {
                assert_eq!(
                    delivered.instance_id, instance_id,
                    "instances are delivered in order"
                );
                // Ours: this node's proposer had exactly this value in flight (value id), and
                // it is this batch (its time and random seed), not an earlier one of ours.
                let ours = delivered.proposed_here
                    && matches!(
                        delivered.value.payload.as_ref(),
                        Some(Payload::Binlog(chosen)) if pending.is_this_batch(chosen)
                    );
                if ours {
                    if let Err(error) = pending.commit_with_checksum(
                        instance_id,
                        &delivered.value,
                        delivered.checksum_after,
                    ) {
                        context.fail_fatally(
                            &format!("COMMIT of chosen instance {instance_id} failed"),
                            &error,
                        );
                    }
                    return Resolution::Committed(instance_id);
                }
                pending.rollback();
                return Resolution::OtherChosen(delivered);
            }
            WriterMessage::Proposed {
                token: answered,
                outcome,
            } if answered == token => match outcome {
                // The delivery decides; Lost means another value's delivery is on its way.
                Ok(ProposalOutcome::Chosen { .. }) | Ok(ProposalOutcome::Lost { .. }) => {}
                Ok(ProposalOutcome::Busy) => {
                    pending.rollback();
                    return Resolution::Failed(SqlError::new(
                        SqlErrorKind::Busy,
                        "the proposal queue is full; nothing was applied, retry shortly",
                    ));
                }
                Ok(ProposalOutcome::Refused(reason)) => {
                    pending.rollback();
                    return Resolution::Failed(SqlError::new(
                        SqlErrorKind::NotMaster,
                        format!("not proposed ({reason}); the statement was not executed"),
                    ));
                }
                Err(RuntimeError::NotRunning { .. }) => {
                    pending.rollback();
                    return Resolution::Failed(not_master());
                }
                Err(error) => {
                    pending.rollback();
                    return Resolution::Failed(SqlError::new(
                        SqlErrorKind::Unknown,
                        format!("{error}; check whether the write was applied before retrying"),
                    ));
                }
            },
            other => handle_busy(context, other),
        }
    }
}
