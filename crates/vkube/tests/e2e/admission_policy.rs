//! ValidatingAdmissionPolicy end to end through kubectl: a policy with a ConfigMap param chosen
//! by a paramRef selector, a variable, a messageExpression, a matchCondition and a
//! namespaceSelector denies with kube-apiserver's message and reason; a missing param fails the
//! write under failurePolicy Fail and lets it through under Ignore; a Warn binding gives kubectl
//! a warning; a reason of Forbidden makes a 403; an expression that does not compile is refused
//! when the policy is created.

use crate::harness::*;

fn create(server: &Server, yaml: &str) -> Output {
    let file = server
        .dir
        .path()
        .join(format!("policy-{}.yaml", rand_suffix()));
    std::fs::write(&file, yaml).unwrap();
    let file = file.display().to_string();
    server.kubectl("kubectl", &["create", "-f", &file])
}

fn created(server: &Server, yaml: &str) {
    let out = create(server, yaml);
    assert!(out.ok, "{yaml}\n{}", out.stderr);
}

fn configmap(name: &str, ns: &str, keys: usize) -> String {
    let data: Vec<String> = (0..keys).map(|i| format!("  k{i}: v")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\ndata:\n{}\n",
        data.join("\n")
    )
}

const MAX_KEYS: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: max-keys.example.com
spec:
  failurePolicy: Fail
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    namespaceSelector: {matchLabels: {env: prod}}
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [configmaps]}
  matchConditions:
  - name: not-a-param
    expression: \"object.metadata.name != 'kube-root-ca.crt' && !(has(object.metadata.labels) && 'policy-param' in object.metadata.labels)\"
  variables:
  - name: keys
    expression: \"has(object.data) ? size(object.data) : 0\"
  validations:
  - expression: \"variables.keys <= int(params.data.max)\"
    messageExpression: \"'too many keys: ' + string(variables.keys) + ' > ' + params.data.max\"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: max-keys-binding
spec:
  policyName: max-keys.example.com
  validationActions: [Deny]
  paramRef:
    selector: {matchLabels: {policy-param: 'yes'}}
    parameterNotFoundAction: Deny
";

#[test]
fn admission_policies_deny_warn_and_fail_as_kube_apiserver() {
    let server = Server::start();
    for (ns, env) in [
        ("vap-prod", "prod"),
        ("vap-bare", "prod"),
        ("vap-dev", "dev"),
    ] {
        run(&server, "kubectl", &["create", "namespace", ns]);
        run(
            &server,
            "kubectl",
            &["label", "namespace", ns, &format!("env={env}")],
        );
    }
    created(
        &server,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: limits\n  namespace: vap-prod\n  labels: {policy-param: 'yes'}\ndata:\n  max: '2'\n",
    );
    created(&server, MAX_KEYS);

    // Denied, with upstream's message and reason (no reason given: Invalid, 422, which kubectl
    // prints as the Kubernetes documentation shows: `The configmaps "big" is invalid: : …`).
    let out = create(&server, &configmap("big", "vap-prod", 3));
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "The configmaps \"big\" is invalid: : ValidatingAdmissionPolicy 'max-keys.example.com' with binding 'max-keys-binding' denied request: too many keys: 3 > 2"
        ),
        "{}",
        out.stderr
    );
    created(&server, &configmap("small", "vap-prod", 2));
    // The namespaceSelector leaves other namespaces alone; the matchCondition skips params.
    created(&server, &configmap("big", "vap-dev", 3));
    created(
        &server,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other-param\n  namespace: vap-prod\n  labels: {policy-param: 'no'}\ndata: {a: '1', b: '2', c: '3'}\n",
    );

    // No param in the namespace: parameterNotFoundAction Deny under failurePolicy Fail.
    let out = create(&server, &configmap("any", "vap-bare", 1));
    assert!(
        out.stderr.contains(
            "ValidatingAdmissionPolicy 'max-keys.example.com' with binding 'max-keys-binding' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
        ),
        "{}",
        out.stderr
    );
    run(
        &server,
        "kubectl",
        &[
            "patch",
            "validatingadmissionpolicy",
            "max-keys.example.com",
            "--type=merge",
            "-p",
            r#"{"spec":{"failurePolicy":"Ignore"}}"#,
        ],
    );
    created(&server, &configmap("any", "vap-bare", 1));

    // Warn: the write goes through, kubectl prints the warning.
    created(
        &server,
        "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: no-foo.example.com
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
  validations:
  - expression: \"!has(object.data) || !('foo' in object.data)\"
    message: foo is not allowed
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: no-foo-binding
spec:
  policyName: no-foo.example.com
  validationActions: [Warn, Audit]
",
    );
    let foo = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: NAME\n  namespace: vap-dev\ndata: {foo: bar}\n";
    let out = create(&server, &foo.replace("NAME", "warned"));
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "Warning: Validation failed for ValidatingAdmissionPolicy 'no-foo.example.com' with binding 'no-foo-binding': foo is not allowed"
        ),
        "{}",
        out.stderr
    );
    // Deny with reason Forbidden: a 403.
    run(
        &server,
        "kubectl",
        &[
            "patch",
            "validatingadmissionpolicybinding",
            "no-foo-binding",
            "--type=merge",
            "-p",
            r#"{"spec":{"validationActions":["Deny"]}}"#,
        ],
    );
    let out = create(&server, &foo.replace("NAME", "denied"));
    assert!(
        out.stderr.contains("Error from server (Forbidden)")
            && out.stderr.contains(
                "configmaps \"denied\" is forbidden: ValidatingAdmissionPolicy 'no-foo.example.com' with binding 'no-foo-binding' denied request: foo is not allowed"
            ),
        "{}",
        out.stderr
    );

    // An expression that does not compile is refused at create, at upstream's field path.
    let out = create(
        &server,
        "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: broken.example.com
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
  validations:
  - expression: \"object.(\"
",
    );
    assert!(
        out.stderr.contains("The ValidatingAdmissionPolicy \"broken.example.com\" is invalid: spec.validations[0].expression: Invalid value: \"object.(\": compilation failed: ERROR: <input>:1:8: Syntax error: "),
        "{}",
        out.stderr
    );
}
