//! `herald dev forward` and `herald webhooks replay`: provider webhooks delivered to a
//! developer's machine, and stored deliveries sent again.

use anyhow::Context;
use serde_json::Value;
use shared::domain::notify::{ForwardedWebhook, Payload};

use crate::cli::{DevForwardArgs, WebhooksCommand};
use crate::client::{call, http};
use crate::sse::Follower;

pub async fn forward(args: DevForwardArgs) -> anyhow::Result<()> {
    let query = args.sources.map(|s| ("sources", s)).into_iter().collect();
    let path = "/v1/dev-forwards/stream";
    let mut follower = Follower::new(&args.remote, path, query, "herald dev forward")?;
    let client = http()?;
    let mut handled = 0usize;
    loop {
        let event = follower.next().await?;
        let payload: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        // A local server that is down or refuses is reported, and the stream goes on.
        match post(&client, &args.to, &payload).await {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("herald dev forward: {e:#}"),
        }
        handled += 1;
        if args.max.is_some_and(|max| handled >= max) {
            return Ok(());
        }
    }
}

pub async fn webhooks(cmd: WebhooksCommand) -> anyhow::Result<()> {
    let WebhooksCommand::Replay {
        remote,
        delivery_id,
        to,
    } = cmd;
    let client = http()?;
    let base = format!("{}/v1/webhook-deliveries/{delivery_id}", remote.url);
    let Some(to) = to else {
        let again = call(client.post(format!("{base}/replay")), &remote).await?;
        println!(
            "replayed as delivery {}",
            again["id"].as_str().unwrap_or("?")
        );
        return Ok(());
    };
    let delivery = call(client.get(&base), &remote).await?;
    println!("{}", post(&client, &to, &delivery["payload"]).await?);
    Ok(())
}

/// POSTs a payload to `to`: a forwarded provider webhook as it was received (its body and
/// headers, and where it came from in `herald-forwarded-*`), any other event as its JSON.
async fn post(
    client: &reqwest::Client,
    to: &reqwest::Url,
    payload: &Value,
) -> anyhow::Result<String> {
    let parsed: Payload =
        serde_json::from_value(payload.clone()).context("not an event payload")?;
    let request = client.post(to.clone());
    let (request, what) = match serde_json::from_value::<ForwardedWebhook>(parsed.data) {
        Ok(hook) if parsed.event_type.is_forward() => {
            let body = hook.body().context("the stored body is damaged")?;
            let mut request = request;
            for (name, value) in hook.outgoing_headers() {
                request = request.header(name, value);
            }
            let what = format!("{} {} {}", hook.source.as_str(), hook.method, hook.path);
            (request.body(body), what)
        }
        _ => (request.json(payload), parsed.event_type.to_string()),
    };
    let res = request
        .send()
        .await
        .with_context(|| format!("posting to {to}"))?;
    Ok(format!("{what} -> {}", res.status()))
}
