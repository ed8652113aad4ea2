//! [`AuditStore`] on SQLite.

use super::rows::{records, AuditRow};
use super::*;

/// A value bound to a statement built at run time.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// The smallest string greater than every string that starts with
/// `prefix` (UTF-8 sorts bytewise as code points do), or `None` if there is
/// none. `action >= prefix AND action < successor` is "starts with
/// `prefix`" as an index range.
pub(super) fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            0xD800 => 0xE000,
            n => n,
        };
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The statement of an audit search and its arguments. Only the filters
/// given are written (no `? IS NULL OR ...`), so that SQLite can pick the
/// index that fits: `audit_log_org_idx`, `audit_log_workspace_idx`,
/// `audit_log_workspace_action_idx` or `audit_log_action_idx` (migration
/// 0006; a test checks the plans). Action prefixes match as a range of the
/// index, in lower case: every action is lower-case ASCII, and the LIKE
/// this replaces ignored ASCII case.
pub(super) fn audit_search(query: &AuditQuery) -> (String, Vec<Arg>) {
    let mut sql = String::from("SELECT * FROM audit_log WHERE organization_id = ?");
    let mut args = vec![Arg::Text(query.organization_id.to_string())];
    if let Some(workspace_id) = &query.workspace_id {
        sql.push_str(" AND workspace_id = ?");
        args.push(Arg::Text(workspace_id.to_string()));
    }
    if let Some(prefix) = query
        .action_prefix
        .as_ref()
        .map(|p| p.to_ascii_lowercase())
        .filter(|p| !p.is_empty())
    {
        sql.push_str(" AND action >= ?");
        if let Some(successor) = prefix_successor(&prefix) {
            sql.push_str(" AND action < ?");
            args.push(Arg::Text(prefix));
            args.push(Arg::Text(successor));
        } else {
            args.push(Arg::Text(prefix));
        }
    }
    if let Some(before) = query.before_id {
        sql.push_str(" AND id < ?");
        args.push(Arg::Int(before));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Arg::Int(i64::from(query.limit)));
    (sql, args)
}

pub(super) fn bind_args<'q, O>(
    mut query: sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments<'q>>,
    args: &'q [Arg],
) -> sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text.as_str()),
            Arg::Int(n) => query.bind(*n),
        };
    }
    query
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn search_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        let (sql, args) = audit_search(query);
        let rows = bind_args(sqlx::query_as::<_, AuditRow>(&sql), &args)
            .fetch_all(&self.pool)
            .await?;
        records(rows)
    }
}
