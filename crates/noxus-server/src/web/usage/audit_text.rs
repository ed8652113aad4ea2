//! The Audit tab's words: each row of the log told as one sentence about
//! people (by email) and keys (by name and fragment), and the kinds of
//! change the tab can be filtered by.

use std::collections::HashMap;

use noxus_api::Role;
use serde_json::Value;
use time::OffsetDateTime;

use crate::store::{AuditRecord, KeyId, UserId};

/// The kinds of change the Audit tab filters by: the action prefix sent as
/// `?action=` and what a person reads in the list. Every prefix matches
/// only the actions its label names.
pub(crate) const ACTION_KINDS: &[(&str, &str)] = &[
    ("", "All changes"),
    ("api_key.", "API keys: every change"),
    ("api_key.create", "API keys created"),
    ("api_key.rotate", "API keys rotated"),
    ("api_key.revoke", "API keys revoked"),
    ("membership.", "Members: every change"),
    ("membership.set", "Members added or given another role"),
    ("membership.remove", "Members removed"),
    ("workspace.", "Workspace created, limits changed or deleted"),
    ("workflow", "Workflows and their versions"),
    ("user.", "Accounts created or changed"),
    ("run.", "Workflow runs started, stopped or deleted"),
];

/// What the sentences name: people's emails and keys' names and fragments.
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// Email of each user of the organization.
    pub emails: HashMap<UserId, String>,
    /// Name and masked value (`noxus_ENJ6…5txN`) of each key still stored.
    pub keys: HashMap<KeyId, (String, String)>,
}

impl Names {
    fn person(&self, id: Option<&str>) -> String {
        match id {
            Some(id) => self
                .emails
                .get(id)
                .cloned()
                .unwrap_or_else(|| "a user who no longer exists".to_owned()),
            None => "someone".to_owned(),
        }
    }

    /// `'billing service' (noxus_ENJ6…5txN)`: the name the entry recorded
    /// (else the key's current one) and the fragment of the stored key
    /// (else the prefix the entry recorded).
    fn key(&self, id: &str, details: &Value) -> String {
        let stored = self.keys.get(id);
        let name = text(details, "name")
            .map(str::to_owned)
            .or_else(|| stored.map(|(name, _)| name.clone()));
        let fragment = stored
            .map(|(_, masked)| masked.clone())
            .or_else(|| text(details, "prefix").map(|p| format!("{p}…")));
        match (name, fragment) {
            (Some(name), Some(fragment)) => format!("'{name}' ({fragment})"),
            (Some(name), None) => format!("'{name}'"),
            (None, Some(fragment)) => fragment,
            (None, None) => "a key that no longer exists".to_owned(),
        }
    }

    /// Who acted: the user's email, with the key when the change came
    /// through the API; the platform itself when nobody did.
    fn actor(&self, row: &AuditRecord) -> String {
        let person = row
            .actor_user_id
            .as_ref()
            .map(|id| self.person(Some(id.as_str())));
        let key = row
            .actor_key_id
            .as_ref()
            .map(|id| self.key(id.as_str(), &Value::Null));
        match (person, key) {
            (Some(person), Some(key)) => format!("{person}, with key {key},"),
            (Some(person), None) => person,
            (None, Some(key)) => format!("Key {key}"),
            (None, None) => "The platform".to_owned(),
        }
    }
}

fn text<'a>(details: &'a Value, field: &str) -> Option<&'a str> {
    details.get(field).and_then(Value::as_str)
}

fn role(details: &Value, field: &str) -> Option<Role> {
    details
        .get(field)
        .and_then(|r| serde_json::from_value(r.clone()).ok())
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Member => "member",
        Role::Admin => "admin",
        Role::Owner => "owner",
    }
}

fn count_of(details: &Value, field: &str) -> usize {
    details
        .get(field)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fn time_of_ms(details: &Value, field: &str) -> Option<String> {
    let ms = details.get(field).and_then(Value::as_i64)?;
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    Some(
        crate::time_fmt::rfc3339(t)
            .chars()
            .take(16)
            .collect::<String>()
            .replace('T', " ")
            + " UTC",
    )
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// One audit row as a sentence: "admin@example.com revoked key 'billing
/// service' (noxus_ENJ6…5txN)." Actions this tab does not know yet are
/// still shown, with their code.
pub(crate) fn sentence(row: &AuditRecord, names: &Names) -> String {
    let who = names.actor(row);
    let d = &row.details;
    let target = row.target_id.as_str();
    let text = match row.action.as_str() {
        "api_key.create" => {
            let owner = text(d, "owner_user_id");
            let for_whom = match owner {
                Some(owner) if Some(owner) != row.actor_user_id.as_ref().map(UserId::as_str) => {
                    format!(" for {}", names.person(Some(owner)))
                }
                _ => String::new(),
            };
            format!("{who} created key {}{for_whom}", names.key(target, d))
        }
        "api_key.revoke" if text(d, "reason") == Some("reported_leaked") => {
            // The reporter's text, quoted as it came (the page escapes it).
            let at = text(d, "leak_url").map_or_else(
                || " (where it was found was not said)".to_owned(),
                |url| format!(" at {url}"),
            );
            let by = text(d, "leak_source")
                .map(|source| format!(" (reported by {source})"))
                .unwrap_or_default();
            format!(
                "{who} revoked key {}: reported leaked{at}{by}",
                names.key(target, d)
            )
        }
        "api_key.revoke" => format!("{who} revoked key {}", names.key(target, d)),
        "api_key.leak_dismiss" => format!(
            "{who} dismissed the warning that key {} was reported leaked",
            names.key(target, d)
        ),
        "api_key.rotate" => {
            let successor = text(d, "new_key_id")
                .map(|id| format!("; its replacement is {}", names.key(id, &Value::Null)))
                .unwrap_or_default();
            let until = match time_of_ms(d, "old_key_valid_until") {
                Some(until) => format!("; the old key works until {until}"),
                None => "; the old key stopped working at once".to_owned(),
            };
            format!(
                "{who} rotated key {}{successor}{until}",
                names.key(target, d)
            )
        }
        "membership.set" => {
            let person = names.person(Some(target));
            match (role(d, "previous_role"), role(d, "role")) {
                (None, Some(new)) => format!(
                    "{who} added {person} as {}",
                    super::super::layout::role_with_article(new)
                ),
                (Some(old), Some(new)) if old == new => {
                    format!("{who} kept {person} as {}", role_word(new))
                }
                (Some(old), Some(new)) => format!(
                    "{who} changed the role of {person} from {} to {}",
                    role_word(old),
                    role_word(new)
                ),
                _ => format!("{who} changed the role of {person}"),
            }
        }
        "membership.remove" => {
            let revoked = count_of(d, "revoked_key_ids");
            let keys = if revoked == 0 {
                String::new()
            } else {
                format!(
                    "; {} of theirs stopped working",
                    plural(revoked, "key", "keys")
                )
            };
            format!(
                "{who} removed {} from the workspace{keys}",
                names.person(Some(target))
            )
        }
        "workspace.create" => format!(
            "{who} created the workspace '{}'",
            text(d, "name").unwrap_or_default()
        ),
        "workspace.delete" => format!(
            "{who} deleted the workspace '{}'",
            text(d, "name").unwrap_or_default()
        ),
        "workspace.rate_limit" => match (
            d.get("per_second").and_then(Value::as_u64),
            d.get("burst").and_then(Value::as_u64),
        ) {
            (Some(rate), Some(burst)) => format!(
                "{who} set the workspace's rate limit per key to {rate} requests a second (bursts of {burst})"
            ),
            _ => format!("{who} removed the workspace's own rate limit (keys get the server's)"),
        },
        "platform.bootstrap" => format!(
            "The organization was set up, with {} as owner of this workspace",
            text(d, "owner_email").unwrap_or("its first user")
        ),
        "workflow.create" => format!(
            "{who} created workflow '{}'",
            text(d, "name").unwrap_or_default()
        ),
        "workflow.update" => format!(
            "{who} changed workflow '{}'",
            text(d, "name").unwrap_or_default()
        ),
        "workflow.delete" => format!("{who} deleted workflow {target}"),
        "workflow_version.create" => format!(
            "{who} created version '{}' of workflow {}",
            text(d, "name").unwrap_or_default(),
            text(d, "workflow_id").unwrap_or_default()
        ),
        "workflow_version.update" => format!(
            "{who} changed version '{}' of workflow {}",
            text(d, "name").unwrap_or_default(),
            text(d, "workflow_id").unwrap_or_default()
        ),
        "run.start" => format!(
            "{who} started run {target} of workflow {}",
            text(d, "workflow_id").unwrap_or("?")
        ),
        "run.stop" => format!("{who} stopped run {target}"),
        "run.delete" => format!("{who} deleted run {target}"),
        "user.create" => {
            let person = text(d, "email").map_or_else(|| names.person(Some(target)), str::to_owned);
            let admin = if d.get("is_org_admin").and_then(Value::as_bool) == Some(true) {
                " (an organization admin)"
            } else {
                ""
            };
            if text(d, "invited_to").is_some() {
                format!("{who} invited {person}: a new account{admin} with a one-time password")
            } else {
                format!("{who} created an account for {person}{admin}")
            }
        }
        "user.deactivate" => format!("{who} deactivated {}", names.person(Some(target))),
        "user.reactivate" => format!("{who} reactivated {}", names.person(Some(target))),
        "user.org_admin" => {
            let person = names.person(Some(target));
            if d.get("is_org_admin").and_then(Value::as_bool) == Some(true) {
                format!("{who} made {person} an organization admin")
            } else {
                format!("{who} removed {person} as organization admin")
            }
        }
        "user.password_reset" => format!(
            "{who} set a temporary password for {}",
            names.person(Some(target))
        ),
        "user.password_change" => format!("{who} changed their password"),
        "user.sessions_end" => format!(
            "{who} ended the dashboard sessions of {}",
            names.person(Some(target))
        ),
        other => format!(
            "{who} made a change ({other}) to {} {target}",
            row.target_type.replace('_', " ")
        ),
    };
    text + "."
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(action: &str, target: &str, details: Value) -> AuditRecord {
        AuditRecord {
            id: 7,
            organization_id: "org".into(),
            workspace_id: Some("ws".into()),
            actor_user_id: Some("u-admin".into()),
            actor_key_id: None,
            action: action.to_owned(),
            target_type: "api_key".to_owned(),
            target_id: target.to_owned(),
            details,
            client_addr: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn names() -> Names {
        let mut names = Names::default();
        names
            .emails
            .insert("u-admin".into(), "admin@example.com".to_owned());
        names
            .emails
            .insert("u-bob".into(), "bob@example.com".to_owned());
        names.keys.insert(
            "k1".into(),
            ("billing service".to_owned(), "noxus_ENJ6…5txN".to_owned()),
        );
        names
    }

    #[test]
    fn an_invitation_reads_as_one() {
        let r = row(
            "user.create",
            "u-bob",
            json!({"email": "bob@example.com", "is_org_admin": false, "invited_to": "ws"}),
        );
        assert_eq!(
            sentence(&r, &names()),
            "admin@example.com invited bob@example.com: a new account with a one-time password."
        );
        let r = row("user.org_admin", "u-bob", json!({"is_org_admin": true}));
        assert_eq!(
            sentence(&r, &names()),
            "admin@example.com made bob@example.com an organization admin."
        );
    }

    #[test]
    fn a_revocation_names_the_person_and_the_key_by_name_and_fragment() {
        let r = row(
            "api_key.revoke",
            "k1",
            json!({"name": "billing service", "prefix": "noxus_ENJ6"}),
        );
        assert_eq!(
            sentence(&r, &names()),
            "admin@example.com revoked key 'billing service' (noxus_ENJ6…5txN)."
        );
    }

    #[test]
    fn a_key_reported_leaked_says_where_it_was_found() {
        let mut r = row(
            "api_key.revoke",
            "k1",
            json!({"name": "billing service", "prefix": "noxus_ENJ6", "reason": "reported_leaked",
                   "leak_url": "https://github.com/acme/app/blob/0a1b/.env#L3", "leak_source": "github"}),
        );
        r.actor_user_id = None;
        r.client_addr = Some("192.0.2.7".to_owned());
        assert_eq!(
            sentence(&r, &names()),
            "The platform revoked key 'billing service' (noxus_ENJ6…5txN): reported leaked at https://github.com/acme/app/blob/0a1b/.env#L3 (reported by github)."
        );
        r.details = json!({"name": "billing service", "reason": "reported_leaked"});
        assert_eq!(
            sentence(&r, &names()),
            "The platform revoked key 'billing service' (noxus_ENJ6…5txN): reported leaked (where it was found was not said)."
        );
        let r = row(
            "api_key.leak_dismiss",
            "k1",
            json!({"name": "billing service"}),
        );
        assert_eq!(
            sentence(&r, &names()),
            "admin@example.com dismissed the warning that key 'billing service' (noxus_ENJ6…5txN) was reported leaked."
        );
    }

    #[test]
    fn a_key_no_longer_stored_is_named_with_the_prefix_the_entry_kept() {
        let r = row(
            "api_key.create",
            "gone",
            json!({"name": "ci", "prefix": "noxus_AAAA", "owner_user_id": "u-bob"}),
        );
        assert_eq!(
            sentence(&r, &names()),
            "admin@example.com created key 'ci' (noxus_AAAA…) for bob@example.com."
        );
    }

    #[test]
    fn membership_changes_read_as_sentences() {
        let mut r = row(
            "membership.set",
            "u-bob",
            json!({"role": "member", "previous_role": null}),
        );
        r.target_type = "user".to_owned();
        assert_eq!(
            sentence(&r, &names()),
            "admin@example.com added bob@example.com as a member."
        );
        r.details = json!({"role": "viewer", "previous_role": "admin"});
        assert_eq!(
            sentence(&r, &names()),
            "admin@example.com changed the role of bob@example.com from admin to viewer."
        );
        r.action = "membership.remove".to_owned();
        r.details = json!({"previous_role": "viewer", "revoked_key_ids": ["a", "b"]});
        assert_eq!(
            sentence(&r, &names()),
            "admin@example.com removed bob@example.com from the workspace; 2 keys of theirs stopped working."
        );
    }

    #[test]
    fn a_change_through_the_api_names_the_key_used_and_unknown_actions_keep_their_code() {
        let mut r = row("something.new", "x1", json!({}));
        r.actor_key_id = Some("k1".into());
        assert_eq!(
            sentence(&r, &names()),
            "admin@example.com, with key 'billing service' (noxus_ENJ6…5txN), made a change (something.new) to api key x1."
        );
    }

    #[test]
    fn every_filter_prefix_is_lower_case_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for (prefix, label) in ACTION_KINDS {
            assert_eq!(*prefix, prefix.to_ascii_lowercase());
            assert!(!label.is_empty());
            assert!(seen.insert(*prefix), "{prefix} twice");
        }
    }
}
