//! The Helm release record of a virtual cluster: `vkube create` writes what `helm install` would
//! (Secret `sh.helm.release.v1.NAME.vN`, type `helm.sh/release.v1`, the release as gzip'd JSON in
//! base64), so `helm list`, `helm get values`, `helm upgrade` and `helm uninstall` treat the
//! virtual cluster as the Helm release it is. The format is Helm 4's storage driver's
//! (pkg/storage/driver/secrets.go) and release v1 (pkg/release/v1).

use std::io::{Read, Write};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

pub const CHART_NAME: &str = "vkube";

/// The chart's files, embedded: the release carries the chart as Helm does, so `helm upgrade
/// --reuse-values` and `helm get` work on it.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "templates/_helpers.tpl",
        include_str!("../../../../chart/templates/_helpers.tpl"),
    ),
    (
        "templates/NOTES.txt",
        include_str!("../../../../chart/templates/NOTES.txt"),
    ),
    (
        "templates/config-secret.yaml",
        include_str!("../../../../chart/templates/config-secret.yaml"),
    ),
    (
        "templates/certs-secret.yaml",
        include_str!("../../../../chart/templates/certs-secret.yaml"),
    ),
    (
        "templates/serviceaccount.yaml",
        include_str!("../../../../chart/templates/serviceaccount.yaml"),
    ),
    (
        "templates/role.yaml",
        include_str!("../../../../chart/templates/role.yaml"),
    ),
    (
        "templates/rolebinding.yaml",
        include_str!("../../../../chart/templates/rolebinding.yaml"),
    ),
    (
        "templates/clusterrole.yaml",
        include_str!("../../../../chart/templates/clusterrole.yaml"),
    ),
    (
        "templates/clusterrolebinding.yaml",
        include_str!("../../../../chart/templates/clusterrolebinding.yaml"),
    ),
    (
        "templates/service.yaml",
        include_str!("../../../../chart/templates/service.yaml"),
    ),
    (
        "templates/headless-service.yaml",
        include_str!("../../../../chart/templates/headless-service.yaml"),
    ),
    (
        "templates/statefulset.yaml",
        include_str!("../../../../chart/templates/statefulset.yaml"),
    ),
];
const SCHEMA: &str = include_str!("../../../../chart/values.schema.json");
const CHART_YAML: &str = include_str!("../../../../chart/Chart.yaml");

/// The Secret that holds revision `version` of release `name`.
pub fn secret_name(name: &str, version: u32) -> String {
    format!("sh.helm.release.v1.{name}.v{version}")
}

/// What a release record says, as vkube needs it.
#[derive(Debug, Clone)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub version: u32,
    pub status: String,
    /// The user's values (`-f` and `--set`), as recorded.
    pub config: Value,
    pub manifest: String,
    pub first_deployed: String,
    pub last_deployed: String,
    /// The chart's name (`vkube` for vkube's; another chart's release of the same name is not
    /// ours to touch).
    pub chart: String,
}

/// The release's Secret for `release`: Helm's labels, type and encoding.
pub fn to_secret(release: &Release, defaults: &Value, notes: &str) -> Result<Value> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let metadata: Value = serde_saphyr::from_str(CHART_YAML).context("chart/Chart.yaml")?;
    let templates: Vec<Value> = TEMPLATES
        .iter()
        .map(|(name, data)| json!({"name": name, "data": b64.encode(data)}))
        .collect();
    let mut info = json!({
        "first_deployed": release.first_deployed,
        "last_deployed": release.last_deployed,
        "description": if release.version == 1 { "Install complete" } else { "Upgrade complete" },
        "status": release.status,
        "notes": notes,
    });
    if release.status != "deployed" {
        info["description"] = json!("Superseded");
    }
    let body = json!({
        "name": release.name,
        "info": info,
        "chart": {
            "metadata": metadata,
            "lock": null,
            "templates": templates,
            "values": defaults,
            "schema": b64.encode(SCHEMA),
            "files": [],
        },
        "config": release.config,
        "manifest": release.manifest,
        "version": release.version,
        "namespace": release.namespace,
        "apply_method": "ssa",
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&serde_json::to_vec(&body)?)?;
    let encoded = b64.encode(gz.finish()?);
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(&release.name, release.version),
            "namespace": release.namespace,
            "labels": {
                "name": release.name,
                "owner": "helm",
                "status": release.status,
                "version": release.version.to_string(),
            },
        },
        "type": "helm.sh/release.v1",
        // Secret data is base64 in the API; Helm's payload is itself base64 text.
        "data": {"release": b64.encode(encoded)},
    }))
}

/// The release JSON inside a release Secret (Helm writes gzip'd JSON; it also reads plain JSON).
fn decode_body(secret: &k8s_openapi::api::core::v1::Secret) -> Result<Value> {
    use base64::Engine;
    let name = secret.metadata.name.clone().unwrap_or_default();
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get("release"))
        .with_context(|| format!("release Secret {name} has no data.release"))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&data.0)
        .with_context(|| format!("release Secret {name}: data.release is not base64"))?;
    let json = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("release Secret {name}: not gzip"))?;
        out
    } else {
        raw
    };
    serde_json::from_slice(&json)
        .with_context(|| format!("release Secret {name}: not a Helm release"))
}

/// A release Secret's record.
pub fn from_secret(secret: &k8s_openapi::api::core::v1::Secret) -> Result<Release> {
    let body = decode_body(secret)?;
    let name = secret.metadata.name.clone().unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let Some(version) = body["version"].as_u64() else {
        bail!("release Secret {name}: no version");
    };
    Ok(Release {
        name: text(&body["name"]),
        namespace: text(&body["namespace"]),
        version: version as u32,
        status: text(&body["info"]["status"]),
        config: body["config"].clone(),
        manifest: text(&body["manifest"]),
        first_deployed: text(&body["info"]["first_deployed"]),
        last_deployed: text(&body["info"]["last_deployed"]),
        chart: text(&body["chart"]["metadata"]["name"]),
    })
}

/// Revision `secret` of a release, marked superseded by a newer one (as `helm upgrade` does):
/// the label and the record's status.
pub fn supersede(secret: &k8s_openapi::api::core::v1::Secret) -> Result<Value> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = decode_body(secret)?;
    body["info"]["status"] = json!("superseded");
    body["info"]["description"] = json!("Superseded");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&serde_json::to_vec(&body)?)?;
    let mut object = serde_json::to_value(secret)?;
    object["metadata"]["labels"]["status"] = json!("superseded");
    object["data"]["release"] = json!(b64.encode(b64.encode(gz.finish()?)));
    for noise in [
        "managedFields",
        "resourceVersion",
        "uid",
        "creationTimestamp",
    ] {
        if let Some(m) = object["metadata"].as_object_mut() {
            m.remove(noise);
        }
    }
    Ok(object)
}

/// The objects a release's manifest names (for delete and for what an upgrade drops).
pub fn manifest_objects(manifest: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(manifest).context("the release's manifest is not YAML")?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

/// Every revision's Secret of release `name` in `namespace`, oldest first.
pub async fn revisions(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<k8s_openapi::api::core::v1::Secret>> {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    let params = kube::api::ListParams::default().labels(&format!("owner=helm,name={name}"));
    let mut list = secrets
        .list(&params)
        .await
        .map_err(|e| {
            super::host::explain(
                e,
                &format!("reading Helm releases in namespace {namespace}"),
            )
        })?
        .items;
    let version = |s: &Secret| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("version"))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    list.sort_by_key(version);
    Ok(list)
}

/// RFC 3339 with nanoseconds, as Go's time.Time marshals.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_its_secret() {
        let release = Release {
            name: "team-a".into(),
            namespace: "vkube-team-a".into(),
            version: 1,
            status: "deployed".into(),
            config: json!({"controlPlane": {"statefulSet": {"highAvailability": {"replicas": 1}}}}),
            manifest: "---\n# Source: vkube/templates/x.yaml\nkind: Secret\n".into(),
            first_deployed: now(),
            last_deployed: now(),
            chart: CHART_NAME.into(),
        };
        let secret = to_secret(&release, &json!({}), "notes").unwrap();
        assert_eq!(secret["metadata"]["name"], "sh.helm.release.v1.team-a.v1");
        assert_eq!(secret["metadata"]["labels"]["owner"], "helm");
        let typed: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret).unwrap();
        let back = from_secret(&typed).unwrap();
        assert_eq!(back.chart, CHART_NAME);
        assert_eq!(back.config, release.config);
        assert_eq!(back.manifest, release.manifest);
        assert_eq!(back.version, 1);
        assert_eq!(back.status, "deployed");
        let old = supersede(&typed).unwrap();
        let old: k8s_openapi::api::core::v1::Secret = serde_json::from_value(old).unwrap();
        assert_eq!(from_secret(&old).unwrap().status, "superseded");
        assert_eq!(old.metadata.labels.unwrap()["status"], "superseded");
        let objects = manifest_objects(&back.manifest).unwrap();
        assert_eq!(objects[0]["kind"], "Secret");
    }
}
