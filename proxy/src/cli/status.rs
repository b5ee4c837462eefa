//! `paxsql status --http ADDR`: a node's `/status`, for humans (or raw with `--json`).

use anyhow::Context;

#[derive(Clone, Debug, clap::Args)]
pub struct StatusArgs {
    /// The node's HTTP address (its --http flag), e.g. 127.0.0.1:5633.
    #[arg(long, default_value = "127.0.0.1:5633")]
    pub http: String,
    /// Print the raw JSON document instead of a summary.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let (code, body) = crate::http::get(&args.http, "/status").await?;
    if code != 200 {
        anyhow::bail!("{} answered HTTP {code}: {body}", args.http);
    }
    if args.json {
        print!("{body}");
        return Ok(());
    }
    let status: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{} sent invalid JSON", args.http))?;
    print!("{}", render(&status));
    Ok(())
}

/// Renders a `/status` document as a few aligned lines per group.
pub fn render(status: &serde_json::Value) -> String {
    let mut out = format!("node {} (pid {})\n", status["node_id"], status["pid"]);
    let groups = status["groups"].as_object().cloned().unwrap_or_default();
    let mut names: Vec<_> = groups.keys().cloned().collect();
    names.sort();
    if names.is_empty() {
        names.push(String::new());
    }
    for name in names {
        let group = if name.is_empty() {
            status
        } else {
            &groups[&name]
        };
        let master = match &group["master_id"] {
            serde_json::Value::Null => "none (election in progress)".to_string(),
            id => format!("node {id}"),
        };
        out.push_str(&format!(
            "  group {:<12} role {:<9} master {:<10} committed {:<8} applied {:<8} members {}\n",
            if name.is_empty() { "main" } else { &name },
            group["role"].as_str().unwrap_or("?"),
            master,
            group["committed_instance"],
            group["applied_instance"],
            group["members"]
        ));
    }
    out
}
