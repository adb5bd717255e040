//! Placeholder until the controller's e2e tests land.
