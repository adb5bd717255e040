//! vkube's API server: TLS and HTTP/1.1+2, authentication of the admin client certificate, the
//! REST handlers over the store, watches fed by one shared store watch, discovery and health.
#![forbid(unsafe_code)]

mod admission_policy;
mod aggregation;
mod apply;
pub mod audit;
mod authn;
mod authz;
mod body;
mod cache;
pub mod cluster_secret;
mod compactor;
mod controllers;
mod conversion;
mod crds;
mod delete;
pub mod filters;
mod flowcontrol;
mod gc;
pub mod host_proxy;
pub mod host_services;
mod http_server;
mod hub;
pub mod identity;
pub mod leader;
mod list;
mod metrics;
mod patch;
mod pod_actions;
mod quota;
mod rbac_policy;
pub mod replicas;
mod request;
mod response;
mod rest;
mod reviews;
mod router;
mod scale;
mod service_accounts;
mod service_repair;
mod services;
mod tls;
mod watch_stream;
mod webhooks;
mod yaml;

pub use filters::Limits;
pub use http_server::{AuthOptions, Config, LeaderTask, ServeError, serve};
pub use identity::{Ca, CertKey};
pub use request::{RequestInfo, query};
pub use response::Body as ResponseBody;
pub use router::InProcess;
