//! The suppression list as CSV: the import's rows parsed into entries (bad rows reported by
//! line, the rest kept), and entries written back in the same format.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::suppression::{entry_address, Reason, Scope, Suppression};
use super::TenantId;

/// The most rows one import takes.
pub const MAX_IMPORT_ROWS: usize = 100_000;

/// The export's header: the import's columns, then where each entry came from and when.
pub const EXPORT_HEADER: [&str; 6] = [
    "channel",
    "address",
    "reason",
    "expires_at",
    "source",
    "created_at",
];

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RejectedRow {
    /// 1-based line number in the CSV, the header being line 1.
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{0}")]
    Malformed(String),
    #[error("at most {MAX_IMPORT_ROWS} rows per import")]
    TooManyRows,
}

/// Parses an import (header `channel,address`, optional `reason`, `expires_at`) into the
/// tenant's entries, marked with `source`.
pub fn parse_import(
    tenant: &TenantId,
    body: &[u8],
    source: &str,
) -> Result<(Vec<Suppression>, Vec<RejectedRow>), CsvError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(body);
    let header = reader
        .headers()
        .map_err(|e| CsvError::Malformed(format!("the header row is not valid CSV: {e}")))?
        .clone();
    let column = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(c_channel), Some(c_address)) = (column("channel"), column("address")) else {
        return Err(CsvError::Malformed(
            "the header must name `channel` and `address` columns".into(),
        ));
    };
    let columns = [
        Some(c_channel),
        Some(c_address),
        column("reason"),
        column("expires_at"),
    ];
    let mut entries = Vec::new();
    let mut rejected = Vec::new();
    let now = Utc::now();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        if entries.len() + rejected.len() >= MAX_IMPORT_ROWS {
            return Err(CsvError::TooManyRows);
        }
        let parsed = row
            .map_err(|e| e.to_string())
            .and_then(|row| entry_of(tenant, &row, columns, source, now));
        match parsed {
            Ok(entry) => entries.push(entry),
            Err(reason) => rejected.push(RejectedRow { line, reason }),
        }
    }
    Ok((entries, rejected))
}

/// One row's entry; `columns` are channel, address, reason and expires_at.
fn entry_of(
    tenant: &TenantId,
    row: &csv::StringRecord,
    columns: [Option<usize>; 4],
    source: &str,
    now: DateTime<Utc>,
) -> Result<Suppression, String> {
    let cell = |c: Option<usize>| c.and_then(|c| row.get(c)).filter(|v| !v.is_empty());
    let [c_channel, c_address, c_reason, c_expires] = columns;
    let (channel, address) =
        entry_address(cell(c_channel).unwrap_or(""), cell(c_address).unwrap_or(""))
            .map_err(|e| e.detail)?;
    let reason = match cell(c_reason) {
        None => Reason::Manual,
        Some(r) => Reason::parse(r).ok_or_else(|| format!("unknown reason {r:?}"))?,
    };
    let expires_at = cell(c_expires)
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("expires_at {t:?} is not an RFC 3339 time"))
        })
        .transpose()?;
    Ok(Suppression {
        scope: Scope::Tenant(tenant.clone()),
        channel,
        address,
        reason,
        source: Some(source.into()),
        created_at: now,
        expires_at,
    })
}

/// Appends entries to an export in `EXPORT_HEADER`'s columns.
pub fn write_rows(out: &mut csv::Writer<Vec<u8>>, entries: &[Suppression]) -> csv::Result<()> {
    for s in entries {
        out.write_record([
            s.channel.as_str(),
            &s.address,
            s.reason.as_str(),
            &s.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            s.source.as_deref().unwrap_or_default(),
            &s.created_at.to_rfc3339(),
        ])?;
    }
    Ok(())
}
