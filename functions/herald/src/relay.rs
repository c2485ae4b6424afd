//! `herald numbers import` (a CSV of numbers bought outside Herald) and `herald relay
//! simulate` (the routing engine's decision and trace, readably), through a running server.

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::{NumbersCommand, RelayCommand, Remote};
use crate::client::{call, http};

pub async fn numbers(cmd: NumbersCommand) -> anyhow::Result<()> {
    match cmd {
        NumbersCommand::Import { remote, file } => import(&remote, &file).await,
    }
}

pub async fn relay(cmd: RelayCommand) -> anyhow::Result<()> {
    match cmd {
        RelayCommand::Simulate {
            remote,
            to,
            from,
            at,
            body,
        } => {
            let mut input = json!({ "to": to, "from": from, "body": body });
            if let Some(at) = at {
                input["at"] = json!(at);
            }
            let req = http()?
                .post(format!("{}/v1/routing/simulate", remote.url))
                .json(&input);
            print!("{}", render(&call(req, &remote).await?));
            Ok(())
        }
    }
}

/// One CSV line as the API's number: `number,role,provider,capabilities,worker`.
fn row(line: &str) -> anyhow::Result<Value> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
    let (Some(number), Some(role)) = (field(0), field(1)) else {
        bail!("a line needs at least a number and a role");
    };
    let mut caps = json!({ "sms": false, "mms": false, "whatsapp": false });
    for cap in field(3).unwrap_or("sms").split('|').map(str::trim) {
        match cap {
            "sms" | "mms" | "whatsapp" => caps[cap] = json!(true),
            other => bail!("unknown capability {other:?} (sms, mms, whatsapp)"),
        }
    }
    let mut n = json!({
        "number": number, "role": role, "provider": field(2).unwrap_or("twilio"),
        "capabilities": caps,
    });
    if let Some(worker) = field(4) {
        n["worker"] = json!(worker);
    }
    Ok(n)
}

async fn import(remote: &Remote, file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let client = http()?;
    let (mut added, mut known, mut refused) = (0, 0, 0);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && line.starts_with("number")) {
            continue;
        }
        let outcome = match row(line) {
            Err(e) => Err(e),
            Ok(n) => {
                let req = client.post(format!("{}/v1/numbers", remote.url)).json(&n);
                call(req, remote).await
            }
        };
        match outcome {
            Ok(_) => added += 1,
            Err(e)
                if e.to_string().starts_with("409")
                    && e.to_string().contains("registered already") =>
            {
                known += 1;
                println!("line {}: registered already", i + 1);
            }
            Err(e) => {
                refused += 1;
                println!("line {}: {e}", i + 1);
            }
        }
    }
    println!("{added} added, {known} registered already, {refused} refused");
    if refused > 0 {
        bail!("{refused} line(s) refused");
    }
    Ok(())
}

/// The decision, then each step: matched or not, and why.
fn render(sim: &Value) -> String {
    let route = &sim["route"];
    let mut out = match route["action"].as_str().unwrap_or("?") {
        "relay" => format!(
            "route: relay to {} from {} (assignment {}, the {} writes{})\n",
            route["to"].as_str().unwrap_or("?"),
            route["from"].as_str().unwrap_or("?"),
            route["assignment_id"].as_str().unwrap_or("?"),
            route["sender_role"].as_str().unwrap_or("?"),
            if route["closing"] == true {
                ", in the grace: the window is closing"
            } else {
                ""
            },
        ),
        "worker" => format!(
            "route: to the worker {} from {}\n",
            route["to"].as_str().unwrap_or("?"),
            route["from"].as_str().unwrap_or("?")
        ),
        "front_desk" if route["auto_reply"] == true => {
            "route: front desk, with an auto-reply\n".to_owned()
        }
        "front_desk" => "route: front desk\n".to_owned(),
        "opt_out" => format!(
            "route: opt-out keyword {}\n",
            route["keyword"].as_str().unwrap_or("?")
        ),
        other => format!("route: {other}\n"),
    };
    for (i, step) in sim["trace"].as_array().into_iter().flatten().enumerate() {
        let matched = if step["matched"] == true {
            "yes"
        } else {
            "no "
        };
        out.push_str(&format!(
            "  {}. {:<31} {matched}  {}\n",
            i + 1,
            step["step"].as_str().unwrap_or("?"),
            step["why"].as_str().unwrap_or("")
        ));
    }
    if let Some(sharing) = sim["sharing"].as_object() {
        out.push_str(&format!(
            "sharing: {} -> {}; the other party gets: {}\n",
            sharing["kinds"],
            sharing["action"].as_str().unwrap_or("?"),
            sharing["body"]
                .as_str()
                .map_or("nothing (blocked)".to_owned(), |b| format!("{b:?}")),
        ));
    }
    out
}
