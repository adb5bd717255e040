//! Placeholder until the controller lands.

use std::sync::Arc;

pub(crate) async fn run(_ctx: Arc<crate::Context>) {}
