//! Deterministic `random()` and `randomblob()`.
//!
//! Every connection gets overrides backed by a [`Prng`] that the state machine reseeds before
//! each statement from (value seed, statement index), so a replica replaying statement k of a
//! value draws exactly the numbers the master drew. The generator is SplitMix64, written out
//! here so its output never changes with a dependency upgrade: replicas of different builds
//! must agree.

use std::sync::{Arc, Mutex};

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::Connection;

/// Largest `randomblob(N)` we produce; SQLite's own limit is the blob size limit.
pub const RANDOMBLOB_BYTES_MAX: usize = 1024 * 1024;

/// SplitMix64: tiny, fast, and stable forever.
#[derive(Clone, Debug)]
pub struct Prng {
    state: u64,
}

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng { state: seed }
    }

    /// The generator for statement `statement_index` of a value seeded with `value_seed`.
    pub fn for_statement(value_seed: u64, statement_index: usize) -> Self {
        let mut mixer =
            Prng::new(value_seed ^ (statement_index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        Prng::new(mixer.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// The generator a connection's `random()`/`randomblob()` draw from.
pub type SharedPrng = Arc<Mutex<Prng>>;

/// Replaces `random()` and `randomblob()` on `connection` with ones drawing from `prng`.
///
/// Flags: `SQLITE_INNOCUOUS` so that `trusted_schema=OFF` still allows them in column defaults
/// and triggers; **not** `SQLITE_DETERMINISTIC`, which would let the planner evaluate
/// `random()` once per query instead of once per row.
pub fn register_random(connection: &Connection, prng: &SharedPrng) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_INNOCUOUS;
    let for_random = Arc::clone(prng);
    connection.create_scalar_function("random", 0, flags, move |_context| {
        let mut prng = for_random
            .lock()
            .expect("the PRNG lock is never held across a panic");
        Ok(prng.next_u64() as i64)
    })?;
    let for_blob = Arc::clone(prng);
    connection.create_scalar_function("randomblob", 1, flags, move |context| {
        let length = blob_length(context)?;
        let mut bytes = vec![0u8; length];
        let mut prng = for_blob
            .lock()
            .expect("the PRNG lock is never held across a panic");
        prng.fill(&mut bytes);
        Ok(bytes)
    })
}

/// SQLite's rule: N < 1 gives a 1-byte blob.
fn blob_length(context: &Context<'_>) -> rusqlite::Result<usize> {
    let requested: i64 = context.get::<Option<i64>>(0)?.unwrap_or(1);
    let length = usize::try_from(requested.max(1)).unwrap_or(RANDOMBLOB_BYTES_MAX);
    if length > RANDOMBLOB_BYTES_MAX {
        return Err(rusqlite::Error::UserFunctionError(
            format!("randomblob({length}) is larger than paxsql's limit of {RANDOMBLOB_BYTES_MAX} bytes").into(),
        ));
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_output_is_stable_across_builds() {
        // Reference values of SplitMix64 seeded with 0 (Vigna's published sequence).
        let mut prng = Prng::new(0);
        assert_eq!(prng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(prng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn statements_of_one_value_draw_different_streams() {
        let first = Prng::for_statement(7, 0).next_u64();
        let second = Prng::for_statement(7, 1).next_u64();
        assert_ne!(first, second);
        assert_eq!(first, Prng::for_statement(7, 0).next_u64());
    }
}
