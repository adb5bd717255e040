//! The built-in resources of the served groups of Kubernetes 1.33, as data: scope, verbs, short
//! names, categories, subresources and where each is stored.

use super::{Resource, Subresource};

pub(super) const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NO_COLLECTION: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
const CREATE: &[&str] = &["create"];
const CREATE_GET: &[&str] = &["create", "get"];
const PROXY: &[&str] = &["create", "delete", "get", "patch", "update"];
const ALL: &[&str] = &["all"];
const API_EXTENSIONS: &[&str] = &["api-extensions"];

const fn sub(name: &'static str, verbs: &'static [&'static str]) -> Subresource {
    Subresource {
        name,
        kind: None,
        verbs,
        kubelet: false,
    }
}
const fn kubelet(
    name: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
) -> Subresource {
    Subresource {
        name,
        kind: Some(("", "v1", kind)),
        verbs,
        kubelet: true,
    }
}
pub(super) const STATUS: Subresource = sub("status", GET_PATCH_UPDATE);
pub(super) const SCALE: Subresource = Subresource {
    name: "scale",
    kind: Some(("autoscaling", "v1", "Scale")),
    verbs: GET_PATCH_UPDATE,
    kubelet: false,
};

#[allow(clippy::too_many_arguments)]
const fn res(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [Subresource],
) -> Resource {
    Resource {
        group,
        version,
        plural,
        kind,
        namespaced,
        verbs: ALL_VERBS,
        short_names,
        categories,
        subresources,
        storage: plural,
        custom: false,
    }
}

const fn stored(mut r: Resource, storage: &'static str) -> Resource {
    r.storage = storage;
    r
}

const fn verbs(mut r: Resource, verbs: &'static [&'static str]) -> Resource {
    r.verbs = verbs;
    r
}

const NS: bool = true;
const CLUSTER: bool = false;

/// Every built-in resource, core first, then groups in upstream's discovery order.
pub static RESOURCES: &[Resource] = &[
    // core/v1
    verbs(
        res("", "v1", "bindings", "Binding", NS, &[], &[], &[]),
        CREATE,
    ),
    verbs(
        res(
            "",
            "v1",
            "componentstatuses",
            "ComponentStatus",
            CLUSTER,
            &["cs"],
            &[],
            &[],
        ),
        &["get", "list"],
    ),
    res("", "v1", "configmaps", "ConfigMap", NS, &["cm"], &[], &[]),
    stored(
        res("", "v1", "endpoints", "Endpoints", NS, &["ep"], &[], &[]),
        "services/endpoints",
    ),
    res("", "v1", "events", "Event", NS, &["ev"], &[], &[]),
    res(
        "",
        "v1",
        "limitranges",
        "LimitRange",
        NS,
        &["limits"],
        &[],
        &[],
    ),
    verbs(
        res(
            "",
            "v1",
            "namespaces",
            "Namespace",
            CLUSTER,
            &["ns"],
            &[],
            &[sub("finalize", &["update"]), STATUS],
        ),
        NO_COLLECTION,
    ),
    stored(
        res(
            "",
            "v1",
            "nodes",
            "Node",
            CLUSTER,
            &["no"],
            &[],
            &[kubelet("proxy", "NodeProxyOptions", PROXY), STATUS],
        ),
        "minions",
    ),
    res(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        NS,
        &["pvc"],
        &[],
        &[STATUS],
    ),
    res(
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        CLUSTER,
        &["pv"],
        &[],
        &[STATUS],
    ),
    res(
        "",
        "v1",
        "pods",
        "Pod",
        NS,
        &["po"],
        ALL,
        &[
            kubelet("attach", "PodAttachOptions", CREATE_GET),
            Subresource {
                name: "binding",
                kind: Some(("", "v1", "Binding")),
                verbs: CREATE,
                kubelet: false,
            },
            sub("ephemeralcontainers", GET_PATCH_UPDATE),
            Subresource {
                name: "eviction",
                kind: Some(("policy", "v1", "Eviction")),
                verbs: CREATE,
                kubelet: false,
            },
            kubelet("exec", "PodExecOptions", CREATE_GET),
            kubelet("log", "Pod", &["get"]),
            kubelet("portforward", "PodPortForwardOptions", CREATE_GET),
            kubelet("proxy", "PodProxyOptions", PROXY),
            sub("resize", GET_PATCH_UPDATE),
            STATUS,
        ],
    ),
    res("", "v1", "podtemplates", "PodTemplate", NS, &[], &[], &[]),
    stored(
        res(
            "",
            "v1",
            "replicationcontrollers",
            "ReplicationController",
            NS,
            &["rc"],
            ALL,
            &[SCALE, STATUS],
        ),
        "controllers",
    ),
    res(
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        NS,
        &["quota"],
        &[],
        &[STATUS],
    ),
    res("", "v1", "secrets", "Secret", NS, &[], &[], &[]),
    res(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        NS,
        &["sa"],
        &[],
        &[Subresource {
            name: "token",
            kind: Some(("authentication.k8s.io", "v1", "TokenRequest")),
            verbs: CREATE,
            kubelet: false,
        }],
    ),
    stored(
        res(
            "",
            "v1",
            "services",
            "Service",
            NS,
            &["svc"],
            ALL,
            &[kubelet("proxy", "ServiceProxyOptions", PROXY), STATUS],
        ),
        "services/specs",
    ),
    // apiregistration.k8s.io/v1: APIService objects, stored; nothing is proxied to them
    stored(
        res(
            "apiregistration.k8s.io",
            "v1",
            "apiservices",
            "APIService",
            CLUSTER,
            &[],
            API_EXTENSIONS,
            &[STATUS],
        ),
        "apiregistration.k8s.io/apiservices",
    ),
    // admissionregistration.k8s.io/v1
    res(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        CLUSTER,
        &[],
        API_EXTENSIONS,
        &[],
    ),
    res(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        CLUSTER,
        &[],
        API_EXTENSIONS,
        &[STATUS],
    ),
    res(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        CLUSTER,
        &[],
        API_EXTENSIONS,
        &[],
    ),
    res(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        CLUSTER,
        &[],
        API_EXTENSIONS,
        &[],
    ),
    // apiextensions.k8s.io/v1
    stored(
        res(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            CLUSTER,
            &["crd", "crds"],
            API_EXTENSIONS,
            &[STATUS],
        ),
        "apiextensions.k8s.io/customresourcedefinitions",
    ),
    // apps/v1
    res(
        "apps",
        "v1",
        "controllerrevisions",
        "ControllerRevision",
        NS,
        &[],
        &[],
        &[],
    ),
    res(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        NS,
        &["ds"],
        ALL,
        &[STATUS],
    ),
    res(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        NS,
        &["deploy"],
        ALL,
        &[SCALE, STATUS],
    ),
    res(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        NS,
        &["rs"],
        ALL,
        &[SCALE, STATUS],
    ),
    res(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        NS,
        &["sts"],
        ALL,
        &[SCALE, STATUS],
    ),
    // authentication.k8s.io/v1: reviews, answered and never stored
    verbs(
        res(
            "authentication.k8s.io",
            "v1",
            "selfsubjectreviews",
            "SelfSubjectReview",
            CLUSTER,
            &[],
            &[],
            &[],
        ),
        CREATE,
    ),
    verbs(
        res(
            "authentication.k8s.io",
            "v1",
            "tokenreviews",
            "TokenReview",
            CLUSTER,
            &[],
            &[],
            &[],
        ),
        CREATE,
    ),
    // authorization.k8s.io/v1: reviews, answered and never stored
    verbs(
        res(
            "authorization.k8s.io",
            "v1",
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            NS,
            &[],
            &[],
            &[],
        ),
        CREATE,
    ),
    verbs(
        res(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            CLUSTER,
            &[],
            &[],
            &[],
        ),
        CREATE,
    ),
    verbs(
        res(
            "authorization.k8s.io",
            "v1",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            CLUSTER,
            &[],
            &[],
            &[],
        ),
        CREATE,
    ),
    verbs(
        res(
            "authorization.k8s.io",
            "v1",
            "subjectaccessreviews",
            "SubjectAccessReview",
            CLUSTER,
            &[],
            &[],
            &[],
        ),
        CREATE,
    ),
    // autoscaling/v2 (preferred) and v1
    res(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        NS,
        &["hpa"],
        ALL,
        &[STATUS],
    ),
    res(
        "autoscaling",
        "v1",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        NS,
        &["hpa"],
        ALL,
        &[STATUS],
    ),
    // batch/v1
    res(
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        NS,
        &["cj"],
        ALL,
        &[STATUS],
    ),
    res("batch", "v1", "jobs", "Job", NS, &[], ALL, &[STATUS]),
    // certificates.k8s.io/v1
    res(
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        CLUSTER,
        &["csr"],
        &[],
        &[sub("approval", GET_PATCH_UPDATE), STATUS],
    ),
    // coordination.k8s.io/v1
    res(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        NS,
        &[],
        &[],
        &[],
    ),
    // discovery.k8s.io/v1
    res(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        NS,
        &[],
        &[],
        &[],
    ),
    // events.k8s.io/v1: the same objects as core events
    res(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        NS,
        &["ev"],
        &[],
        &[],
    ),
    // networking.k8s.io/v1
    res(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        CLUSTER,
        &[],
        &[],
        &[],
    ),
    stored(
        res(
            "networking.k8s.io",
            "v1",
            "ingresses",
            "Ingress",
            NS,
            &["ing"],
            &[],
            &[STATUS],
        ),
        "ingress",
    ),
    res(
        "networking.k8s.io",
        "v1",
        "ipaddresses",
        "IPAddress",
        CLUSTER,
        &["ip"],
        &[],
        &[],
    ),
    res(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        NS,
        &["netpol"],
        &[],
        &[],
    ),
    res(
        "networking.k8s.io",
        "v1",
        "servicecidrs",
        "ServiceCIDR",
        CLUSTER,
        &[],
        &[],
        &[STATUS],
    ),
    // node.k8s.io/v1
    res(
        "node.k8s.io",
        "v1",
        "runtimeclasses",
        "RuntimeClass",
        CLUSTER,
        &[],
        &[],
        &[],
    ),
    // policy/v1
    res(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        NS,
        &["pdb"],
        &[],
        &[STATUS],
    ),
    // rbac.authorization.k8s.io/v1
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        CLUSTER,
        &[],
        &[],
        &[],
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        CLUSTER,
        &[],
        &[],
        &[],
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        NS,
        &[],
        &[],
        &[],
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        NS,
        &[],
        &[],
        &[],
    ),
    // scheduling.k8s.io/v1
    res(
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
        CLUSTER,
        &["pc"],
        &[],
        &[],
    ),
    // storage.k8s.io/v1
    res(
        "storage.k8s.io",
        "v1",
        "csidrivers",
        "CSIDriver",
        CLUSTER,
        &[],
        &[],
        &[],
    ),
    res(
        "storage.k8s.io",
        "v1",
        "csinodes",
        "CSINode",
        CLUSTER,
        &[],
        &[],
        &[],
    ),
    res(
        "storage.k8s.io",
        "v1",
        "csistoragecapacities",
        "CSIStorageCapacity",
        NS,
        &[],
        &[],
        &[],
    ),
    res(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        CLUSTER,
        &["sc"],
        &[],
        &[],
    ),
    res(
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "VolumeAttachment",
        CLUSTER,
        &[],
        &[],
        &[STATUS],
    ),
];
