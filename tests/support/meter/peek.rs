//! Reads an item straight from the emulator, outside every SDK client, so the meter can see
//! an item after an update without the read being counted. Blocking, because interceptor hooks
//! are synchronous; a test's moto answers in about a millisecond.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{json, Value};

use super::units::Item;

/// The item under `key` of `table` (full name), as DynamoDB JSON; None when there is none.
pub fn get_item(endpoint: &str, table: &str, key: &Value) -> Option<Item> {
    let body = json!({ "TableName": table, "Key": key, "ConsistentRead": true }).to_string();
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-amz-json-1.0\r\n\
         X-Amz-Target: DynamoDB_20120810.GetItem\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A thread of its own: the caller is a runtime worker inside a synchronous hook.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // A busy emulator may drop a connection unanswered: ask again.
                let mut last = String::new();
                for attempt in 0..5 {
                    if attempt > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(50 << attempt));
                    }
                    match exchange(&host, &request) {
                        Ok(reply) => return parse(&reply),
                        Err(e) => last = e,
                    }
                }
                panic!("meter: GetItem from the emulator at {host} failed 5 times: {last}")
            })
            .join()
            .expect("meter: peek thread")
    })
}

/// One request on its own connection, the whole reply back; Err when there is none.
fn exchange(host: &str, request: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(host).map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&reply).into_owned();
    if !text.contains("\r\n\r\n") {
        return Err(format!("no HTTP reply: {text:.200}"));
    }
    Ok(text)
}

fn parse(reply: &str) -> Option<Item> {
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_default();
    assert!(
        head.contains(" 200 "),
        "meter: GetItem failed: {reply:.500}"
    );
    let parsed: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("meter: GetItem reply {body:.300}: {e}"));
    parsed["Item"].as_object().cloned()
}
