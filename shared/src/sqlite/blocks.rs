//! Batches bound as plain values. A batch runs as one statement per block of rows; blocks come
//! in three sizes and the last one is padded with NULL rows (which match nothing and are never
//! inserted), so the statement cache holds three plans per statement and SQLite parses no JSON
//! on the hot path (decoding JSON rows was a third of the writer's time).

use std::iter::repeat_n;
use std::sync::OnceLock;

use rusqlite::types::{ToSql, Value as Sql};
use rusqlite::{CachedStatement, Connection};

/// Block sizes, smallest first: a lone row pays no padding, a handful pays at most seven.
const SIZES: [usize; 3] = [1, 8, 32];

/// A statement with one `head <rows> tail` shape, where each row is `cols` placeholders:
/// `(?,?,?)` rows for a `VALUES` list, bare `?` for an `IN` list when `cols` is one.
pub(crate) struct BlockSql {
    head: &'static str,
    cols: usize,
    tail: &'static str,
    texts: OnceLock<[String; 3]>,
}

static NULL: Sql = Sql::Null;

impl BlockSql {
    pub(crate) const fn new(head: &'static str, cols: usize, tail: &'static str) -> BlockSql {
        BlockSql {
            head,
            cols,
            tail,
            texts: OnceLock::new(),
        }
    }

    fn text(&self, size_index: usize) -> &str {
        let texts = self.texts.get_or_init(|| {
            let row = match self.cols {
                1 => "?".to_owned(),
                n => format!("({})", vec!["?"; n].join(",")),
            };
            SIZES.map(|size| {
                format!(
                    "{}{}{}",
                    self.head,
                    vec![row.as_str(); size].join(","),
                    self.tail
                )
            })
        });
        &texts[size_index]
    }

    /// Runs the statement over `values` (rows of `cols` values, flattened), one block at a time,
    /// each block's parameters after `leading` (the head's own `?`s); `run` executes or queries
    /// the prepared block with its parameters.
    pub(crate) fn run_with(
        &self,
        conn: &Connection,
        leading: &[&dyn ToSql],
        values: &[&dyn ToSql],
        mut run: impl FnMut(&mut CachedStatement<'_>, &[&dyn ToSql]) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        let rows = values.len() / self.cols;
        let mut done = 0;
        let mut params: Vec<&dyn ToSql> = Vec::new();
        while done < rows {
            let left = rows - done;
            let size_index = SIZES
                .iter()
                .position(|&s| s >= left)
                .unwrap_or(SIZES.len() - 1);
            let size = SIZES[size_index];
            let take = left.min(size);
            params.clear();
            params.extend_from_slice(leading);
            params.extend_from_slice(&values[done * self.cols..(done + take) * self.cols]);
            params.extend(repeat_n(&NULL as &dyn ToSql, (size - take) * self.cols));
            run(&mut conn.prepare_cached(self.text(size_index))?, &params)?;
            done += take;
        }
        Ok(())
    }

    /// As `run_with`, for a statement with no parameters of its own.
    pub(crate) fn run(
        &self,
        conn: &Connection,
        values: &[&dyn ToSql],
        run: impl FnMut(&mut CachedStatement<'_>, &[&dyn ToSql]) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        self.run_with(conn, &[], values, run)
    }

    /// Executes the statement over `values`, block by block.
    pub(crate) fn execute(&self, conn: &Connection, values: &[&dyn ToSql]) -> rusqlite::Result<()> {
        self.run(conn, values, |stmt, params| {
            stmt.execute(params).map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
            .unwrap();
        conn
    }

    static INSERT: BlockSql = BlockSql::new(
        "INSERT INTO t (a, b) SELECT column1, column2 FROM (VALUES ",
        2,
        ") WHERE column1 IS NOT NULL",
    );
    static DELETE: BlockSql = BlockSql::new("DELETE FROM t WHERE a IN (", 1, ")");

    #[test]
    fn every_row_lands_once_whatever_the_batch_size() {
        for n in [0usize, 1, 2, 8, 9, 31, 32, 33, 70] {
            let conn = table();
            let rows: Vec<(i64, String)> = (0..n as i64).map(|i| (i, format!("r{i}"))).collect();
            let values: Vec<&dyn ToSql> = rows
                .iter()
                .flat_map(|(a, b)| [a as &dyn ToSql, b as &dyn ToSql])
                .collect();
            INSERT.execute(&conn, &values).unwrap();
            let (count, sum): (i64, Option<i64>) = conn
                .query_row("SELECT COUNT(*), SUM(a) FROM t", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!(count, n as i64, "rows for a batch of {n}");
            assert_eq!(sum.unwrap_or(0), (0..n as i64).sum::<i64>());
            let odd: Vec<i64> = (0..n as i64).filter(|i| i % 2 == 1).collect();
            let odd: Vec<&dyn ToSql> = odd.iter().map(|i| i as &dyn ToSql).collect();
            DELETE.execute(&conn, &odd).unwrap();
            let left: i64 = conn
                .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(
                left,
                n.div_ceil(2) as i64,
                "left after deleting odd rows of {n}"
            );
        }
    }
}
