"""A client that is not kubectl against vkube: the Python `kubernetes` package (31.0.0) creates a
CustomResourceDefinition, then creates, server-side applies and watches its objects.

Usage: python_crd.py KUBECONFIG GROUP   (prints OK and exits 0 when every check held)
"""

import sys
import threading
import time

from kubernetes import client, config, dynamic
from kubernetes.dynamic.exceptions import DynamicApiError as ApiException


def text(e):
    return e.body.decode() if isinstance(e.body, bytes) else str(e.body)


def main(kubeconfig, group):
    api = dynamic.DynamicClient(config.new_client_from_config(config_file=kubeconfig))
    crds = api.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    name = f"widgets.{group}"
    crds.create(body={
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "colour": {"type": "string"},
                        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                    }},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                }}},
            }],
        },
    })
    for _ in range(100):
        conditions = crds.get(name=name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the CRD never became Established")

    api.resources.invalidate_cache()
    widgets = api.resources.get(api_version=f"{group}/v1", kind="Widget")
    events = []

    def watch():
        for e in widgets.watch(namespace="default", timeout=20):
            events.append((e["type"], e["object"].metadata.name))
            if e["type"] == "DELETED":
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.5)

    w = widgets.create(namespace="default", body={
        "apiVersion": f"{group}/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 1, "tags": ["a"]},
    })
    assert w.spec.size == 1, w

    applied = {"apiVersion": f"{group}/v1", "kind": "Widget",
               "metadata": {"name": "w1", "namespace": "default"},
               "spec": {"size": 2, "colour": "red"}}
    # The creator (an Update manager) owns size=1: a different size conflicts.
    try:
        widgets.server_side_apply(namespace="default", body=applied, field_manager="python-client")
        raise AssertionError("an apply over another manager's field should conflict")
    except ApiException as e:
        assert e.status == 409, e
        assert "Apply failed with 1 conflict" in text(e) and ".spec.size" in text(e), text(e)
    w = widgets.server_side_apply(namespace="default", body=applied, field_manager="python-client",
                                  force_conflicts=True)
    assert (w.spec.size, w.spec.colour, list(w.spec.tags)) == (2, "red", ["a"]), w
    managers = sorted((m.manager, m.operation) for m in w.metadata.managedFields)
    assert ("python-client", "Apply") in managers, managers

    # Invalid: below the schema's minimum.
    try:
        widgets.patch(namespace="default", name="w1", body={"spec": {"size": 0}},
                      content_type="application/merge-patch+json")
        raise AssertionError("size 0 should be refused")
    except ApiException as e:
        assert e.status == 422 and "spec.size" in text(e), text(e)

    widgets.status.patch(namespace="default", name="w1", body={"status": {"ready": True}},
                         content_type="application/merge-patch+json")
    assert widgets.get(namespace="default", name="w1").status.ready is True
    widgets.delete(namespace="default", name="w1")
    watcher.join(timeout=20)
    kinds = [t for t, n in events if n == "w1"]
    assert kinds[0] == "ADDED" and kinds[-1] == "DELETED" and "MODIFIED" in kinds, events

    crds.delete(name=name)
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
