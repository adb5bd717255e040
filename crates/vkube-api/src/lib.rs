//! Kubernetes API machinery for vkube: which resources exist and how they are stored (the
//! registry), the `Status` errors clients parse, label and field selectors, object metadata rules
//! on write, and the discovery documents. No I/O: the server crate drives it.
#![forbid(unsafe_code)]

pub mod convert;
pub mod crd;
pub mod cron;
pub mod custom_objects;
pub mod defaults;
pub mod discovery;
pub mod duplicates;
pub mod flowcontrol;
pub mod managed_fields;
pub mod object;
pub mod openapi;
pub mod openapi_v2;
pub mod protobuf;
pub mod quantity;
pub mod quota;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod status;
pub mod strategic;
pub mod strategy;
pub mod table;
pub mod validation;

pub use registry::Resource;
pub use status::Status;
