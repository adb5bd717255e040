//! The store conformance suite: the same cases against every backend. Test names carry the
//! backend, e.g. `sqlite::watch_resumes_after_restart`.

#[path = "../common/mod.rs"]
mod common;

mod basics;
mod failover;
mod model;
mod processes;
mod watching;

/// One `#[tokio::test]` per case, calling `$module::$case(backend)`.
macro_rules! cases {
    ($backend:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                crate::$module::$case(crate::common::Fixture::new($backend).await).await;
            }
        )*
    };
}

/// The cases every backend passes.
macro_rules! suite {
    ($backend:expr) => {
        cases!($backend;
            basics::writes_raise_the_revision_by_exactly_one,
            basics::create_update_delete_semantics,
            basics::reads_at_past_and_future_revisions,
            basics::list_by_prefix_with_pages,
            basics::list_pagination_at_a_fixed_revision_while_writes_continue,
            basics::keys_with_a_ttl_expire,
            basics::invalid_keys_are_refused,
            basics::large_lists_are_complete,
            watching::watch_delivers_events_in_order_with_previous_values,
            watching::watch_resumes_after_restart,
            watching::compaction_errors,
            watching::watcher_sees_10k_concurrent_writes_exactly_once_in_order,
            watching::progress_covers_writes_outside_the_prefix,
            model::random_operations_match_the_reference_model,
            processes::cas_counters_from_2_processes_and_8_tasks,
        );
    };
}

mod memory {
    suite!(crate::common::Backend::Memory);
}

mod encrypted {
    suite!(crate::common::Backend::Encrypted);
}

mod sqlite {
    suite!(crate::common::Backend::Sqlite);
    cases!(crate::common::Backend::Sqlite; processes::kill_9_of_a_writer_loses_no_acknowledged_write);
}

mod postgres {
    suite!(crate::common::Backend::Postgres);
    cases!(crate::common::Backend::Postgres;
        processes::kill_9_of_a_writer_loses_no_acknowledged_write,
        processes::postgres_commits_revisions_in_order,
    );
}

mod etcd {
    suite!(crate::common::Backend::Etcd);
    cases!(crate::common::Backend::Etcd;
        processes::kill_9_of_a_writer_loses_no_acknowledged_write,
        watching::progress_covers_another_clusters_writes,
        watching::compaction_is_coordinated_across_clusters,
    );

    #[tokio::test]
    async fn a_dead_first_endpoint_fails_over_to_the_next() {
        crate::failover::a_dead_first_endpoint_fails_over_to_the_next().await;
    }
}
