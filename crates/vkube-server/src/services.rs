//! ClusterIP and NodePort allocation for Services, as kube-apiserver 1.33 does it: each allocated
//! IP is an `IPAddress` object (networking.k8s.io/v1) named after the address, so the store's
//! create-if-absent makes an allocation exclusive across every replica. NodePorts are claimed the
//! same way under `/registry/servicenodeports/` (under `/registry/` so the watch that tracks the
//! store revision sees them). Released when the Service is deleted (the controller sees
//! the delete event) and carried over when an update leaves them unset. What a missed delete
//! event or a dropped port leaves behind, the leader's repair loops free (`service_repair`).

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use vkube_api::object::{cause, now};
use vkube_api::{Status, registry};
use vkube_store::{Store, StoreError};

use crate::rest::store_status;

/// The default service range of kube-apiserver deployments such as kind and kubeadm.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 12);
pub(crate) const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;
/// Where NodePort claims live, one key per port.
pub(crate) const NODE_PORT_PREFIX: &str = "/registry/servicenodeports/";

fn ip_key(ip: &str) -> String {
    registry::find("networking.k8s.io", "v1", "ipaddresses")
        .expect("ipaddresses are registered")
        .key("", ip)
}

/// The first address of the range: upstream gives it to the `kubernetes` Service.
pub fn first_ip() -> String {
    Ipv4Addr::from(u32::from(SERVICE_CIDR.0) + 1).to_string()
}

pub(crate) fn in_range(ip: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - SERVICE_CIDR.1);
    u32::from(ip) & mask == u32::from(SERVICE_CIDR.0)
}

fn random_u32() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn invalid(name: &str, field: &str, message: String) -> Status {
    Status::invalid(
        "Service",
        "",
        name,
        vec![cause("FieldValueInvalid", field, message)],
    )
}

/// Claims `ip` for the Service `namespace/name`; false when another object holds it.
pub(crate) async fn claim_ip(
    store: &dyn Store,
    ip: &str,
    namespace: &str,
    name: &str,
) -> Result<bool, Status> {
    let object = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
        "metadata": {
            "name": ip, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
            "labels": {"ipaddress.kubernetes.io/ip-family": "IPv4", "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"},
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": namespace, "name": name}},
    });
    match store
        .create(&ip_key(ip), object.to_string().into_bytes(), None)
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(err) => Err(store_status(err)),
    }
}

/// Allocates a new Service's ClusterIP (or claims the one it asks for) and its NodePorts.
pub async fn allocate(store: &dyn Store, svc: &mut Value) -> Result<(), Status> {
    let namespace = svc["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = svc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let spec = &mut svc["spec"];
    if spec["type"] == "ExternalName" {
        return Ok(());
    }
    let wanted = spec["clusterIP"].as_str().unwrap_or_default().to_string();
    if wanted != "None" {
        let ip = if wanted.is_empty() {
            let size = 1u32 << (32 - SERVICE_CIDR.1);
            let mut found = None;
            for _ in 0..64 {
                // Skip the network address and the first address (the kubernetes Service's).
                let offset = 2 + random_u32() % (size - 3);
                let ip = Ipv4Addr::from(u32::from(SERVICE_CIDR.0) + offset).to_string();
                if claim_ip(store, &ip, &namespace, &name).await? {
                    found = Some(ip);
                    break;
                }
            }
            found
                .ok_or_else(|| Status::internal("failed to allocate a serviceIP: range is full"))?
        } else {
            let parsed: Ipv4Addr = wanted.parse().map_err(|_| {
                invalid(&name, "spec.clusterIPs[0]", format!("Invalid value: {wanted:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
            })?;
            if !in_range(parsed) {
                return Err(invalid(
                    &name,
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: []string{{{wanted:?}}}: failed to allocate IP {wanted}: the provided IP ({wanted}) is not in the valid range. The range of valid IPs is {}/{}",
                        SERVICE_CIDR.0, SERVICE_CIDR.1
                    ),
                ));
            }
            if !claim_ip(store, &wanted, &namespace, &name).await? {
                return Err(invalid(
                    &name,
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: []string{{{wanted:?}}}: failed to allocate IP {wanted}: provided IP is already allocated"
                    ),
                ));
            }
            wanted
        };
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    } else {
        spec["clusterIPs"] = json!(["None"]);
    }
    spec["ipFamilies"] = json!(["IPv4"]);
    spec["ipFamilyPolicy"] = json!("SingleStack");
    if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
        for i in 0..spec["ports"].as_array().map_or(0, Vec::len) {
            let port = &mut spec["ports"][i];
            let wanted = port["nodePort"].as_u64().filter(|p| *p != 0);
            let claimed = match wanted {
                Some(p) => {
                    let p = u16::try_from(p).ok().filter(|p| NODE_PORTS.contains(p));
                    let Some(p) = p else {
                        return Err(invalid(
                            &name,
                            &format!("spec.ports[{i}].nodePort"),
                            format!(
                                "Invalid value: {}: provided port is not in the valid range. The range of valid ports is 30000-32767",
                                port["nodePort"]
                            ),
                        ));
                    };
                    if !claim_port(store, p, &namespace, &name).await? {
                        return Err(invalid(
                            &name,
                            &format!("spec.ports[{i}].nodePort"),
                            format!("Invalid value: {p}: provided port is already allocated"),
                        ));
                    }
                    p
                }
                None => {
                    let span = u32::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1;
                    let mut found = None;
                    for _ in 0..64 {
                        let p = NODE_PORTS.start() + (random_u32() % span) as u16;
                        if claim_port(store, p, &namespace, &name).await? {
                            found = Some(p);
                            break;
                        }
                    }
                    found.ok_or_else(|| {
                        Status::internal("failed to allocate a nodePort: range is full")
                    })?
                }
            };
            port["nodePort"] = json!(claimed);
        }
    }
    Ok(())
}

/// Claims NodePort `port` for the Service `namespace/name`; false when another holds it.
pub(crate) async fn claim_port(
    store: &dyn Store,
    port: u16,
    namespace: &str,
    name: &str,
) -> Result<bool, Status> {
    let owner = json!({"namespace": namespace, "name": name}).to_string();
    match store
        .create(
            &format!("{NODE_PORT_PREFIX}{port}"),
            owner.into_bytes(),
            None,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(err) => Err(store_status(err)),
    }
}

/// On update: what the client left unset keeps its allocated value; a change is refused.
pub fn keep_allocated(old: &Value, svc: &mut Value) -> Result<(), Status> {
    let name = old["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (o, s) = (&old["spec"], &mut svc["spec"]);
    if o["type"] == "ExternalName" || s["type"] == "ExternalName" {
        return Ok(());
    }
    let given = s["clusterIP"].as_str().unwrap_or_default();
    if given.is_empty() {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            s[field] = o[field].clone();
        }
    } else if o["clusterIP"].as_str().is_some_and(|ip| ip != given) {
        return Err(invalid(
            &name,
            "spec.clusterIPs[0]",
            format!("Invalid value: []string{{{given:?}}}: may not change once set"),
        ));
    } else {
        for field in ["clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if s[field].is_null() {
                s[field] = o[field].clone();
            }
        }
    }
    let old_ports = o["ports"].as_array().cloned().unwrap_or_default();
    for port in s["ports"].as_array_mut().into_iter().flatten() {
        if port["nodePort"].as_u64().unwrap_or(0) == 0 {
            if let Some(p) = old_ports
                .iter()
                .find(|p| p["port"] == port["port"] && p["protocol"] == port["protocol"])
            {
                if !p["nodePort"].is_null() {
                    port["nodePort"] = p["nodePort"].clone();
                }
            }
        }
    }
    Ok(())
}

/// Frees what a deleted Service held, if it still holds it (another Service may own it since).
pub async fn release(store: &dyn Store, svc: &Value) {
    let namespace = svc["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = svc["metadata"]["name"].as_str().unwrap_or_default();
    for ip in svc["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let key = ip_key(ip);
        if let Ok(Some(kv)) = store.get(&key, None).await {
            let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let parent = &obj["spec"]["parentRef"];
            if parent["namespace"] == namespace && parent["name"] == name {
                let _ = store.delete(&key, Some(kv.mod_revision)).await;
            }
        }
    }
    for port in svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_u64())
    {
        let key = format!("{NODE_PORT_PREFIX}{port}");
        if let Ok(Some(kv)) = store.get(&key, None).await {
            let owner: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if owner["namespace"] == namespace && owner["name"] == name {
                let _ = store.delete(&key, Some(kv.mod_revision)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_and_its_first_address() {
        assert_eq!(first_ip(), "10.96.0.1");
        assert!(in_range("10.111.255.254".parse().unwrap()));
        assert!(!in_range("10.112.0.1".parse().unwrap()));
    }

    #[test]
    fn updates_keep_what_was_allocated() {
        let old = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut new =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        keep_allocated(&old, &mut new).unwrap();
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        let mut moved = json!({"spec": {"clusterIP": "10.96.0.10"}});
        let err = keep_allocated(&old, &mut moved).unwrap_err();
        assert!(err.message.ends_with("spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.10\"}: may not change once set"), "{}", err.message);
    }
}
