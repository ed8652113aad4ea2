//! [`AuditStore`] on PostgreSQL.

use super::rows::{records, AuditRow};
use super::*;

/// A value bound to a statement built at run time.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// The smallest string greater than every string that starts with
/// `prefix`, or `None` if there is none (as on SQLite: `action` has the
/// "C" collation, so it compares bytewise, i.e. by code point).
fn prefix_successor(prefix: &str) -> Option<String> {
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

/// The statement of an audit search and its arguments: only the filters
/// given are written, so that the planner can pick the index that fits
/// (the same four indexes as on SQLite). An action prefix is a range of the
/// index, in lower case.
pub(super) fn audit_search(query: &AuditQuery) -> (String, Vec<Arg>) {
    let mut args = vec![Arg::Text(query.organization_id.to_string())];
    let mut sql = String::from("SELECT * FROM audit_log WHERE organization_id = $1");
    let mut push = |sql: &mut String, condition: &str, arg: Arg| {
        args.push(arg);
        sql.push_str(&format!(" AND {condition} ${}", args.len()));
    };
    if let Some(workspace_id) = &query.workspace_id {
        push(
            &mut sql,
            "workspace_id =",
            Arg::Text(workspace_id.to_string()),
        );
    }
    if let Some(prefix) = query
        .action_prefix
        .as_ref()
        .map(|p| p.to_ascii_lowercase())
        .filter(|p| !p.is_empty())
    {
        let successor = prefix_successor(&prefix);
        push(&mut sql, "action >=", Arg::Text(prefix));
        if let Some(successor) = successor {
            push(&mut sql, "action <", Arg::Text(successor));
        }
    }
    if let Some(before) = query.before_id {
        push(&mut sql, "id <", Arg::Int(before));
    }
    args.push(Arg::Int(i64::from(query.limit)));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    (sql, args)
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn search_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        let (sql, args) = audit_search(query);
        let mut statement = sqlx::query_as::<_, AuditRow>(&sql);
        for arg in &args {
            statement = match arg {
                Arg::Text(text) => statement.bind(text.as_str()),
                Arg::Int(n) => statement.bind(*n),
            };
        }
        records(statement.fetch_all(&self.pool).await?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn audit_searches_number_their_arguments() {
        let (sql, args) = audit_search(&AuditQuery {
            organization_id: "org".into(),
            workspace_id: Some("ws".into()),
            action_prefix: Some("API_KEY.".to_owned()),
            before_id: Some(7),
            limit: 5,
        });
        assert_eq!(
            sql,
            "SELECT * FROM audit_log WHERE organization_id = $1 AND workspace_id = $2 \
             AND action >= $3 AND action < $4 AND id < $5 ORDER BY id DESC LIMIT $6"
        );
        assert_eq!(
            args,
            vec![
                Arg::Text("org".to_owned()),
                Arg::Text("ws".to_owned()),
                Arg::Text("api_key.".to_owned()),
                Arg::Text("api_key/".to_owned()),
                Arg::Int(7),
                Arg::Int(5)
            ]
        );
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
    }
}
