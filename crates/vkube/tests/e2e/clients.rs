//! A client that is not kubectl: the Python `kubernetes` package (tests/clients/python_crd.py)
//! creates a CRD, then creates, server-side applies, validates, patches the status of and
//! watches a custom object.

use std::process::Command;

use crate::harness::*;

fn python() -> String {
    std::env::var("VKUBE_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/vkube/pyclient/bin/python")
    })
}

#[test]
fn the_python_kubernetes_client_creates_applies_and_watches_a_custom_resource() {
    let python = python();
    assert!(
        std::path::Path::new(&python).exists(),
        "no Python with the kubernetes package at {python}: run scripts/test (it installs one) or set VKUBE_PYTHON"
    );
    let server = Server::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/python_crd.py"
    );
    let out = Command::new(&python)
        .args([
            script,
            &server.kubeconfig().display().to_string(),
            "py.vkube-test.example.com",
        ])
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
