//! The audit log as CSV: the export streamed page by page in constant memory (for the API,
//! the console and the CLI), or buffered under a cap where a response cannot stream (Lambda).

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::domain::audit::{AuditEntry, AuditId};
use crate::domain::suppression::Scope;
use crate::ports::{AuditFilter, AuditLog};

/// Why a buffered export stopped.
#[derive(Debug, thiserror::Error)]
pub enum BufferedError {
    #[error("the export is larger than one answer may carry")]
    TooLarge,
    #[error(transparent)]
    Read(std::io::Error),
}

/// Entries read per page of an export.
const EXPORT_PAGE: usize = 1_000;
/// The export's first line.
pub const CSV_HEADER: &str = "id,at,actor,action,target,client,request_id,detail\n";

/// How long a buffered export may read: API Gateway gives a Lambda answer 30 s.
const BUFFERED_EXPORT_TIME: std::time::Duration = std::time::Duration::from_secs(20);

/// The whole export in memory, where a response cannot stream (Lambda); refused past `cap`
/// bytes, or past [`BUFFERED_EXPORT_TIME`] (a narrow filter over a large log).
pub async fn buffered(
    rows: impl Stream<Item = Result<Bytes, std::io::Error>>,
    cap: usize,
) -> Result<Vec<u8>, BufferedError> {
    let deadline = tokio::time::Instant::now() + BUFFERED_EXPORT_TIME;
    let mut out = Vec::new();
    let mut rows = std::pin::pin!(rows);
    while let Some(chunk) = rows.next().await {
        let chunk = chunk.map_err(BufferedError::Read)?;
        if out.len() + chunk.len() > cap || tokio::time::Instant::now() > deadline {
            return Err(BufferedError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The CSV, one chunk per page: the header, then each page's rows as it is read. A store
/// failure mid-way ends the body with an error, so the client sees a broken transfer rather
/// than a short file that looks whole.
pub fn csv_pages(
    log: Arc<dyn AuditLog>,
    scope: Scope,
    filter: AuditFilter,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    enum At {
        Header,
        Below(Option<AuditId>),
        Done,
    }
    futures::stream::unfold(At::Header, move |at| {
        let (log, scope, filter) = (log.clone(), scope.clone(), filter.clone());
        async move {
            let cursor = match at {
                At::Header => return Some((Ok(Bytes::from(CSV_HEADER)), At::Below(None))),
                At::Below(cursor) => cursor,
                At::Done => return None,
            };
            let page = match log.audit_page(&scope, &filter, cursor, EXPORT_PAGE).await {
                Ok(page) => page,
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), At::Done)),
            };
            let next = page.resume_below.map_or(At::Done, |id| At::Below(Some(id)));
            Some((csv_rows(&page.items), next))
        }
    })
}

/// A cell a spreadsheet will not run as a formula: text a caller chose (a request id, a path)
/// that starts like one gets a leading `'` (OWASP's advice for CSV exports). A number such as
/// `+15551234567` is not a formula and stays as it is.
fn spreadsheet_safe(cell: &str) -> String {
    let number = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    let formula = match cell.as_bytes().first() {
        Some(b'=' | b'@' | b'\t' | b'\r') => true,
        Some(b'+' | b'-') => !number(&cell[1..]),
        _ => false,
    };
    match formula {
        true => format!("'{cell}"),
        false => cell.to_owned(),
    }
}

/// Entries as CSV lines, under [`CSV_HEADER`].
pub fn csv_rows(entries: &[AuditEntry]) -> Result<Bytes, std::io::Error> {
    let mut out = csv::Writer::from_writer(Vec::with_capacity(entries.len() * 160));
    for e in entries {
        let detail = match &e.detail {
            serde_json::Value::Null => String::new(),
            d => d.to_string(),
        };
        let actor = e.actor.label();
        let cells = [
            e.id.to_string(),
            e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            spreadsheet_safe(&actor),
            e.action.as_str().to_owned(),
            spreadsheet_safe(e.target.as_deref().unwrap_or_default()),
            e.client.clone().unwrap_or_default(),
            spreadsheet_safe(e.request_id.as_deref().unwrap_or_default()),
            detail,
        ];
        out.write_record(&cells)?;
    }
    out.into_inner()
        .map(Bytes::from)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_that_start_like_a_formula_are_quoted_and_numbers_are_not() {
        for (cell, safe) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("+15551234567", "+15551234567"),
            ("welcome", "welcome"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_safe(cell), safe, "{cell}");
        }
    }
}
