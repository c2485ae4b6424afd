//! DynamoDB's capacity arithmetic, from the items themselves (moto reports a constant
//! `ConsumedCapacity`, so the meter works the units out as DynamoDB bills them): item sizes in
//! DynamoDB JSON, 1 KB write units, 4 KB read units, and index writes.

use serde_json::{Map, Value};

pub type Item = Map<String, Value>;

/// An item's size as DynamoDB counts it: attribute names plus values.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &Value) -> usize {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match (kind.as_str(), inner) {
        ("S", Value::String(s)) => s.len(),
        // Numbers: about one byte per two significant digits, plus one.
        ("N", Value::String(s)) => s.len().div_ceil(2) + 1,
        ("B", Value::String(s)) => s.len() * 3 / 4,
        ("BOOL" | "NULL", _) => 1,
        ("SS" | "NS" | "BS", Value::Array(a)) => {
            a.iter().map(|e| e.as_str().map_or(0, str::len)).sum()
        }
        ("L", Value::Array(a)) => 3 + a.iter().map(|e| value_size(e) + 1).sum::<usize>(),
        ("M", Value::Object(m)) => {
            3 + m
                .iter()
                .map(|(k, e)| k.len() + value_size(e) + 1)
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// Write units of one item write: 1 KB units of the larger of the item before and after.
pub fn write_units(before: Option<&Item>, after: Option<&Item>) -> f64 {
    let size = before.map(item_size).max(after.map(item_size)).unwrap_or(0);
    size.div_ceil(1024).max(1) as f64
}

/// Read units of `bytes` read in one request: 4 KB units, half for eventually consistent.
pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent {
        units
    } else {
        units / 2.0
    }
}

/// A global secondary index: its key attributes, whether it projects every attribute, and
/// the other attributes it projects.
pub struct IndexSpec {
    pub key: &'static [&'static str],
    pub all_attributes: bool,
    pub include: &'static [&'static str],
}

/// The indexes of each table, by table suffix, as in `infra/template.yaml`.
pub fn indexes_of(table: &str) -> &'static [IndexSpec] {
    const MESSAGES: &[IndexSpec] = &[
        IndexSpec {
            key: &["provider_key"],
            all_attributes: false,
            include: &[],
        },
        IndexSpec {
            key: &["dl_tenant"],
            all_attributes: true,
            include: &[],
        },
        IndexSpec {
            key: &["search_shard"],
            all_attributes: false,
            include: crate::aws::SEARCH_PROJECTION,
        },
    ];
    // `pending`: only waiting messages have its keys, and it projects nothing else.
    const INBOUND: &[IndexSpec] = &[IndexSpec {
        key: &["pending", "due_at"],
        all_attributes: false,
        include: &[],
    }];
    match table {
        "messages" => MESSAGES,
        "inbound" => INBOUND,
        _ => &[],
    }
}

fn projected(item: &Item, index: &IndexSpec, table_key: &[&str]) -> Item {
    if index.all_attributes {
        return item.clone();
    }
    item.iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            index.key.contains(&k) || table_key.contains(&k) || index.include.contains(&k)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Write units an item write costs in the table's indexes: an entry put, deleted, or moved
/// (two writes) when its key changes, rewritten when a projected attribute changes.
pub fn index_write_units(table: &str, before: Option<&Item>, after: Option<&Item>) -> f64 {
    let table_key = [
        "id", "pk", "tenant", "scope", "entry", "bulk_id", "part", "name",
    ];
    let mut units = 0.0;
    for index in indexes_of(table) {
        let in_index = |i: Option<&Item>| {
            i.filter(|i| index.key.iter().all(|k| i.contains_key(*k)))
                .map(|i| projected(i, index, &table_key))
        };
        let (old, new) = (in_index(before), in_index(after));
        let key_of = |i: &Item| {
            index
                .key
                .iter()
                .map(|k| i.get(*k).cloned())
                .collect::<Vec<_>>()
        };
        units += match (&old, &new) {
            (None, None) => 0.0,
            (Some(o), None) => write_units(Some(o), None),
            (None, Some(n)) => write_units(None, Some(n)),
            (Some(o), Some(n)) if key_of(o) != key_of(n) => {
                write_units(Some(o), None) + write_units(None, Some(n))
            }
            (Some(o), Some(n)) if o != n => write_units(Some(o), Some(n)),
            _ => 0.0,
        };
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(v: Value) -> Item {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn sizes_and_units_follow_dynamodb() {
        let small = item(json!({ "id": { "S": "abc" }, "n": { "N": "12345" } }));
        assert_eq!(item_size(&small), 2 + 3 + 1 + 4);
        assert_eq!(write_units(None, Some(&small)), 1.0);
        let big = item(json!({ "body": { "S": "x".repeat(2100) } }));
        assert_eq!(write_units(Some(&small), Some(&big)), 3.0);
        assert_eq!(read_units(4097, true), 2.0);
        assert_eq!(read_units(10, false), 0.5);
    }

    #[test]
    fn an_index_entry_costs_when_its_key_appears_or_moves() {
        let before = item(json!({ "id": { "S": "m1" }, "status": { "S": "sending" } }));
        let mut after = before.clone();
        after.insert("provider_key".into(), json!({ "S": "ses#1" }));
        assert_eq!(
            index_write_units("messages", Some(&before), Some(&after)),
            1.0
        );
        assert_eq!(
            index_write_units("messages", Some(&before), Some(&before)),
            0.0
        );
        let mut moved = after.clone();
        moved.insert("provider_key".into(), json!({ "S": "ses#2" }));
        assert_eq!(
            index_write_units("messages", Some(&after), Some(&moved)),
            2.0
        );
    }

    #[test]
    fn the_search_index_is_written_at_accept_and_never_by_a_status_change() {
        let queued = item(json!({
            "id": { "S": "m1" }, "search_shard": { "S": "acme#03" },
            "status": { "S": "queued" }, "recipient": { "S": "a@example.com" },
            "body": { "S": "x".repeat(3000) }
        }));
        assert_eq!(index_write_units("messages", None, Some(&queued)), 1.0);
        let mut sent = queued.clone();
        sent.insert("status".into(), json!({ "S": "sent" }));
        assert_eq!(
            index_write_units("messages", Some(&queued), Some(&sent)),
            0.0
        );
    }
}
