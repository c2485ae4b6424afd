//! `herald tail`: follows the tenant's events over `GET /v1/events/stream`.

use serde_json::Value;

use crate::cli::TailArgs;
use crate::sse::{Follower, SseEvent};

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let query = args.types.map(|t| ("types", t)).into_iter().collect();
    let mut follower = Follower::new(&args.remote, "/v1/events/stream", query, "herald tail")?;
    let mut shown = 0usize;
    loop {
        let event = follower.next().await?;
        print_event(&event, args.json);
        shown += 1;
        if args.max.is_some_and(|max| shown >= max) {
            return Ok(());
        }
    }
}

fn print_event(event: &SseEvent, json: bool) {
    if json {
        println!("{}", event.data);
        return;
    }
    let payload: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
    let data = &payload["data"];
    let what = ["message_id", "to", "status", "address", "from"]
        .iter()
        .filter_map(|k| data[*k].as_str().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "{}  {:<24} {what}",
        payload["timestamp"].as_str().unwrap_or("-"),
        event.event
    );
}
