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
                let mut stream = TcpStream::connect(&host)
                    .unwrap_or_else(|e| panic!("meter: cannot reach the emulator at {host}: {e}"));
                stream.write_all(request.as_bytes()).expect("meter: send");
                let mut reply = Vec::new();
                stream.read_to_end(&mut reply).expect("meter: read");
                let text = String::from_utf8_lossy(&reply);
                let (head, body) = text.split_once("\r\n\r\n").expect("meter: HTTP reply");
                assert!(head.contains(" 200 "), "meter: GetItem failed: {text:.500}");
                let parsed: Value = serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("meter: GetItem reply {body:.300}: {e}"));
                parsed["Item"].as_object().cloned()
            })
            .join()
            .expect("meter: peek thread")
    })
}
