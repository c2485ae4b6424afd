//! What one DynamoDB request costs, from its request and response bodies: reads from the
//! items returned, writes from the items before (the meter's copy) and after (the request's
//! item, or a peek at the emulator), index writes included.

use serde_json::Value;

use super::units::{index_write_units, item_size, read_units, write_units, Item};
use super::Books;

/// The table's name without the test stack's prefix (`t<uuid>-messages` -> `messages`).
pub fn short_table(name: &str) -> String {
    name.split_once('-').map_or(name, |(_, t)| t).to_owned()
}

/// Read and write units of one request; the meter's copy of every written item is updated.
pub fn charge(op: &str, req: &Value, resp: &Value, failed: bool, books: &Books) -> (f64, f64) {
    let consistent = |r: &Value| r["ConsistentRead"].as_bool().unwrap_or(false);
    match op {
        "GetItem" => {
            let size = resp["Item"].as_object().map_or(0, item_size);
            (0.0, read_units(size, consistent(req)))
        }
        "Query" | "Scan" => {
            let size: usize = items(&resp["Items"]).map(item_size).sum();
            (0.0, read_units(size, consistent(req)))
        }
        "BatchGetItem" => (0.0, batch_get(req, resp)),
        "PutItem" | "UpdateItem" | "DeleteItem" => {
            let table = req["TableName"].as_str().unwrap_or_default();
            let key = key_of(op, req);
            (write(books, op, table, &key, &req["Item"], failed), 0.0)
        }
        "BatchWriteItem" => (batch_write(req, books), 0.0),
        "TransactWriteItems" => (transact(req, books, failed), 0.0),
        _ => (0.0, 0.0),
    }
}

fn items(v: &Value) -> impl Iterator<Item = &Item> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// Each key asked for is a read of its own, found or not.
fn batch_get(req: &Value, resp: &Value) -> f64 {
    let mut units = 0.0;
    for (table, asked) in req["RequestItems"].as_object().into_iter().flatten() {
        let consistent = asked["ConsistentRead"].as_bool().unwrap_or(false);
        let found: Vec<&Item> = items(&resp["Responses"][table]).collect();
        let keys = asked["Keys"].as_array().map_or(0, Vec::len);
        units += found
            .iter()
            .map(|i| read_units(item_size(i), consistent))
            .sum::<f64>();
        units += keys.saturating_sub(found.len()) as f64 * read_units(0, consistent);
    }
    units
}

fn key_of(op: &str, req: &Value) -> Value {
    if op == "PutItem" {
        return Value::Null; // worked out from the item and the table's known key below
    }
    req["Key"].clone()
}

/// One item write: `put` is the new item of a Put, Null for an update or delete.
fn write(books: &Books, op: &str, table: &str, key: &Value, put: &Value, failed: bool) -> f64 {
    let short = short_table(table);
    let key = if key.is_null() {
        books.key_from_item(table, put)
    } else {
        key.clone()
    };
    let before = books.item(table, &key);
    let after = if failed {
        before.clone()
    } else if op == "DeleteItem" {
        None
    } else if let Some(new) = put.as_object() {
        Some(new.clone())
    } else {
        books.peek(table, &key)
    };
    let units = write_units(before.as_ref(), after.as_ref())
        + index_write_units(&short, before.as_ref(), after.as_ref());
    books.remember(table, &key, after);
    units
}

fn batch_write(req: &Value, books: &Books) -> f64 {
    let mut units = 0.0;
    for (table, writes) in req["RequestItems"].as_object().into_iter().flatten() {
        for w in writes.as_array().into_iter().flatten() {
            units += if w["PutRequest"].is_object() {
                write(
                    books,
                    "PutItem",
                    table,
                    &Value::Null,
                    &w["PutRequest"]["Item"],
                    false,
                )
            } else {
                write(
                    books,
                    "DeleteItem",
                    table,
                    &w["DeleteRequest"]["Key"],
                    &Value::Null,
                    false,
                )
            };
        }
    }
    units
}

/// A transaction's writes cost twice a plain write's, whether it commits or not.
fn transact(req: &Value, books: &Books, failed: bool) -> f64 {
    let mut units = 0.0;
    for t in req["TransactItems"].as_array().into_iter().flatten() {
        let (op, w) = match t.as_object().and_then(|o| o.iter().next()) {
            Some((op, w)) => (op.as_str(), w),
            None => continue,
        };
        let table = w["TableName"].as_str().unwrap_or_default();
        units += 2.0
            * match op {
                "Put" => write(books, "PutItem", table, &Value::Null, &w["Item"], failed),
                "Update" => write(books, "UpdateItem", table, &w["Key"], &Value::Null, failed),
                "Delete" => write(books, "DeleteItem", table, &w["Key"], &Value::Null, failed),
                _ => write_units(books.item(table, &w["Key"]).as_ref(), None),
            };
    }
    units
}
