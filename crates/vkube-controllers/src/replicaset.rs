//! Placeholder until the controller lands.

use std::sync::Arc;

pub(crate) async fn run_replicasets(_ctx: Arc<crate::Context>) {}

pub(crate) async fn run_replication_controllers(_ctx: Arc<crate::Context>) {}
