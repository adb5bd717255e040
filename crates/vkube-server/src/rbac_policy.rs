//! RBAC's controllers: the bootstrap policy reconciled at start (created when absent, missing
//! rules and subjects added where `autoupdate` is not "false"), and ClusterRole aggregation — a
//! role with an `aggregationRule` holds the union of the rules of the roles its selectors match,
//! kept current as those roles change.

use serde_json::{Value, json};
use vkube_api::{object, registry};
use vkube_auth::rbac::bootstrap;
use vkube_store::{ListOptions, StoreError};

use crate::router::Api;

fn rbac(plural: &str) -> &'static vkube_api::Resource {
    registry::find("rbac.authorization.k8s.io", "v1", plural)
        .expect("rbac resources are registered")
}

/// Creates or reconciles every bootstrap ClusterRole and ClusterRoleBinding.
pub async fn reconcile_bootstrap(api: &Api) -> Result<(), StoreError> {
    let objects = bootstrap::cluster_roles()
        .into_iter()
        .map(|o| (rbac("clusterroles"), o))
        .chain(
            bootstrap::cluster_role_bindings()
                .into_iter()
                .map(|o| (rbac("clusterrolebindings"), o)),
        );
    // Concurrently: the store's group commit then writes them in one or two transactions.
    let results = futures_util::future::join_all(
        objects.map(|(resource, want)| reconcile_one(api, resource, want)),
    )
    .await;
    results.into_iter().collect()
}

/// Creates `want`, or adds what the stored object lacks of it.
async fn reconcile_one(
    api: &Api,
    resource: &'static vkube_api::Resource,
    want: Value,
) -> Result<(), StoreError> {
    let name = want["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = resource.key("", &name);
    loop {
        match api.store.get(&key, None).await? {
            None => {
                let mut obj = want.clone();
                if let Err(status) = object::prepare_create(resource, &mut obj) {
                    tracing::error!(%name, message = %status.message, "a bootstrap RBAC object is invalid");
                    break;
                }
                match api
                    .store
                    .create(&key, obj.to_string().into_bytes(), None)
                    .await
                {
                    Ok(_) => break,
                    Err(StoreError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            Some(kv) => {
                let Ok(have) = serde_json::from_slice::<Value>(&kv.value) else {
                    break;
                };
                let Some(fixed) = bootstrap::reconcile(&have, &want) else {
                    break;
                };
                match api
                    .store
                    .update(&key, fixed.to_string().into_bytes(), kv.mod_revision, None)
                    .await
                {
                    Ok(_) => break,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

fn selected(selectors: &[Value], labels: &Value) -> bool {
    selectors
        .iter()
        .any(|s| vkube_api::selector::label_selector_matches(s, labels))
}

/// Brings every aggregated ClusterRole's rules up to date; returns how many it rewrote.
pub async fn aggregate(api: &Api) -> Result<usize, StoreError> {
    let list = api
        .store
        .list("/registry/clusterroles/", ListOptions::default())
        .await?;
    let roles: Vec<(vkube_store::KeyValue, Value)> = list
        .items
        .into_iter()
        .filter_map(|kv| {
            let v = serde_json::from_slice(&kv.value).ok()?;
            Some((kv, v))
        })
        .collect();
    let mut rewritten = 0;
    for (kv, role) in &roles {
        let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() else {
            continue;
        };
        let me = role["metadata"]["name"].as_str().unwrap_or_default();
        let mut sources: Vec<&Value> = roles
            .iter()
            .map(|(_, r)| r)
            .filter(|r| {
                r["metadata"]["name"] != me && selected(selectors, &r["metadata"]["labels"])
            })
            .collect();
        sources.sort_by_key(|r| {
            r["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
        let mut rules: Vec<Value> = Vec::new();
        for r in sources {
            for rule in r["rules"].as_array().into_iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
        if role["rules"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            != rules.as_slice()
        {
            let mut updated = role.clone();
            updated["rules"] = json!(rules);
            match api
                .store
                .update(
                    &kv.key,
                    updated.to_string().into_bytes(),
                    kv.mod_revision,
                    None,
                )
                .await
            {
                Ok(_) => rewritten += 1,
                // Someone wrote meanwhile: the change event brings us back here.
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(rewritten)
}
