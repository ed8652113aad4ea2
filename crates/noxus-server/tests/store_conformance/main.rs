//! The store conformance suite: the contract of `noxus_server::store::Store`
//! (its trait docs, `store/events.rs`, docs/design/scale-out.md "The
//! store"), checked against every backend by the same code.
//!
//! Each check is an `async fn(Arc<dyn Store>)` (or `async fn(&mut Fresh)`
//! when it needs a second store instance on the same database), written
//! once in `checks/`; [`conformance!`] instantiates it as
//! `sqlite::<check>` and `postgres::<check>`. Every test gets a fresh,
//! empty database from its [`backend::Backend`].
//!
//! PostgreSQL runs when `NOXUS_TEST_DATABASE_URL` names a server (each test
//! creates its own database there); without it those tests say SKIPPED on
//! standard error and pass, except under `CI`, where they fail.

#![allow(clippy::unwrap_used)]

mod backend;
mod checks;
mod world;

/// Runs one check on one backend: a fresh store, the check, then cleanup
/// (after a pass only).
macro_rules! conformance {
    (
        store: [$($check:ident),* $(,)?],
        fresh: [$($fresh_check:ident),* $(,)?] $(,)?
    ) => {
        conformance!(@backend sqlite, Sqlite, [$($check),*], [$($fresh_check),*]);
        conformance!(@backend postgres, Postgres, [$($check),*], [$($fresh_check),*]);
    };
    (@backend $module:ident, $backend:ident, [$($check:ident),*], [$($fresh_check:ident),*]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let name = concat!(stringify!($module), "::", stringify!($check));
                    let Some(fresh) = crate::backend::Backend::$backend.fresh(name).await else {
                        return;
                    };
                    crate::checks::$check(std::sync::Arc::clone(&fresh.store)).await;
                    fresh.finish().await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $fresh_check() {
                    let name = concat!(stringify!($module), "::", stringify!($fresh_check));
                    let Some(mut fresh) = crate::backend::Backend::$backend.fresh(name).await else {
                        return;
                    };
                    crate::checks::$fresh_check(&mut fresh).await;
                    fresh.finish().await;
                }
            )*
        }
    };
}

conformance! {
    store: [
        // 1. Ordering promises.
        workspaces_are_listed_by_creation,
        keys_are_listed_newest_first_with_totals_and_pages,
        workflows_are_listed_oldest_first_with_totals_and_kind,
        workflow_versions_are_listed_in_saving_order,
        key_addresses_are_most_recently_seen_first,
        audit_search_is_newest_first_with_paging_and_prefix,
        users_and_members_are_listed_by_email,
        workspaces_of_user_are_exactly_their_memberships,
        // 2. Conflicts, preconditions and quotas; refused writes change nothing.
        duplicate_workspace_name_is_a_conflict,
        duplicate_user_email_is_a_conflict,
        inviting_creates_a_plain_member_at_once_or_nothing,
        demoting_the_last_owner_is_refused,
        removing_the_last_owner_is_refused,
        deactivating_the_last_org_admin_is_refused,
        unmaking_the_last_org_admin_is_refused,
        rotating_a_revoked_key_is_refused,
        rotating_an_expired_key_is_refused,
        rotating_a_rotated_key_is_refused,
        second_bootstrap_changes_nothing,
        key_quota_per_user_is_enforced,
        key_quota_per_workspace_is_enforced,
        workflow_quota_is_enforced,
        version_quota_is_enforced,
        definition_bytes_quota_is_enforced,
        // 3. Idempotent revoke.
        revoke_is_idempotent,
        // 4. Concurrency.
        concurrent_rotations_of_one_key_one_wins,
        concurrent_rotations_with_grace_one_wins,
        owners_demoting_each_other_at_once_keep_one,
        concurrent_bootstraps_make_one_organization,
        concurrent_nonce_use_succeeds_once,
        concurrent_key_creations_never_overshoot_quotas,
        // 5. Usage.
        concurrent_usage_batches_sum_exactly,
        prune_usage_removes_what_is_older,
        // 6. Audit.
        every_mutation_writes_exactly_one_audit_row,
        // 7. Cascades.
        deleting_a_workspace_cascades_and_spares_others,
        // 8. Events.
        every_mutation_publishes_its_events,
        mutations_without_key_relevance_publish_nothing,
        events_are_published_after_commit,
        refused_writes_publish_nothing,
        // 9. Sessions and nonces.
        sessions_respect_expiry,
        ending_sessions_keeps_the_one_asked,
        purge_expired_counts_what_it_removed,
        nonces_are_single_use,
        // 10. Authorization view.
        key_for_auth_follows_membership_and_deactivation,
        // 11. Workflow runs.
        a_run_goes_from_queued_to_completed_with_numbered_events,
        runs_are_listed_newest_first_and_claimed_oldest_first,
        a_stop_wins_over_a_later_finish,
        an_expired_lease_resumes_the_run_with_one_more_attempt,
        runs_of_another_workspace_are_invisible,
        search_finds_words_of_inputs_and_outputs_and_reads_no_syntax,
        deleting_runs_takes_their_io_and_events,
        deleting_a_workflow_or_workspace_takes_its_runs,
        active_run_quota_is_enforced,
        run_bytes_count_what_runs_hold_and_bound_new_runs,
        purging_takes_only_runs_that_ended_before_the_cutoff,
        ended_runs_are_the_oldest_ended_ones_of_the_workflow,
        run_writes_publish_run_changes_apart_from_key_events,
        // 12. Run callbacks.
        a_run_that_ends_with_a_callback_url_queues_one_callback,
        callbacks_are_claimed_when_due_and_attempts_recorded_by_their_sender,
        an_interrupted_last_attempt_fails_the_callback,
        the_callback_secret_generation_rotates_with_audit_rows,
        one_workspace_gets_at_most_its_share_of_senders,
        waiting_callback_quota_is_enforced,
        // 13. Keys reported leaked.
        a_leaked_key_is_revoked_once_with_its_record_audit_row_and_event,
        a_rotated_key_in_its_grace_period_reported_leaked_is_revoked,
        dismissing_a_leak_warning_is_audited_once_and_keeps_the_revocation,
        concurrent_reports_of_one_key_revoke_it_once,
        leak_records_go_with_their_key_and_workspace,
        a_leak_queues_one_event_for_its_workspace_security_webhook_only,
        // 14. Workers under load: one write per run, leases, shutdowns, restarts.
        a_worker_records_its_steps_in_one_write_only_while_it_holds_the_run,
        a_late_worker_never_overwrites_the_worker_that_took_its_run_over,
        renewing_leases_extends_every_run_a_worker_holds_in_one_write,
        released_runs_are_queued_again_at_once_without_counting_the_claim,
        requeueing_running_runs_takes_every_one_and_counts_the_claim,
    ],
    fresh: [
        // 5. Usage from two store instances (two replicas).
        usage_from_two_instances_sums_exactly,
        // 4. Concurrency, from two store instances.
        concurrent_setting_inserts_keep_the_first,
        // 11. Workflow runs: claimers in two store instances (two replicas).
        concurrent_claimers_take_each_run_exactly_once,
        // 12. Run callbacks: senders in two store instances.
        concurrent_senders_claim_each_callback_once,
    ],
}
