//! `paxsql`: run a node, a local dev cluster, or talk to one.

fn main() -> anyhow::Result<()> {
    println!("paxsql {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
