//! A separate process that writes to a store, for the multi-process tests: several processes
//! sharing one store is the situation vkube's HA mode lives in, and `kill -9` needs a process.
//!
//! - `vkube-store-worker cas URL KEY TASKS INCREMENTS`: TASKS tasks each add 1 to the decimal
//!   counter at KEY, INCREMENTS times, by get + compare-and-swap, retrying on conflict.
//! - `vkube-store-worker acks URL PREFIX`: creates PREFIX0, PREFIX1, … until killed, printing
//!   `ack KEY REVISION` after each create returns.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use vkube_store::{Store, StoreError};

fn usage() -> ExitCode {
    eprintln!("usage: vkube-store-worker cas URL KEY TASKS INCREMENTS | acks URL PREFIX");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["cas", url, key, tasks, increments] => match (tasks.parse(), increments.parse()) {
            (Ok(tasks), Ok(increments)) => cas(url, key, tasks, increments).await,
            _ => return usage(),
        },
        ["acks", url, prefix] => acks(url, prefix).await,
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vkube-store-worker: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Adds 1 to the decimal counter at `key`; returns the conflicts met.
pub async fn increment(store: &dyn Store, key: &str) -> Result<u64, StoreError> {
    let next = |kv: &vkube_store::KeyValue| {
        let n: u64 = String::from_utf8_lossy(&kv.value).parse().unwrap_or(0);
        (n + 1).to_string().into_bytes()
    };
    Ok(vkube_store::guaranteed_update(store, key, next).await?.1)
}

async fn cas(url: &str, key: &str, tasks: usize, increments: usize) -> Result<(), StoreError> {
    let store: Arc<dyn Store> = vkube_store::open(url).await?;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let store = store.clone();
        let key = key.to_string();
        handles.push(tokio::spawn(async move {
            let mut retries = 0;
            for _ in 0..increments {
                retries += increment(store.as_ref(), &key).await?;
            }
            Ok::<_, StoreError>(retries)
        }));
    }
    let mut retries = 0;
    for handle in handles {
        retries += handle.await.map_err(|e| StoreError::Backend {
            backend: "worker",
            message: e.to_string(),
        })??;
    }
    println!("done retries={retries}");
    Ok(())
}

async fn acks(url: &str, prefix: &str) -> Result<(), StoreError> {
    let store = vkube_store::open(url).await?;
    let mut stdout = std::io::stdout().lock();
    for i in 0u64.. {
        let key = format!("{prefix}{i:08}");
        let kv = store.create(&key, i.to_string().into_bytes(), None).await?;
        // Printed only after the store acknowledged the write.
        let _ = writeln!(stdout, "ack {key} {}", kv.mod_revision);
        let _ = stdout.flush();
    }
    Ok(())
}
