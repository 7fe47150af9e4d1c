//! deploy/'s files as their tools read them: the Traefik, Compose and Kubernetes files parse
//! and use only keys those formats have (checked against the key trees below, written from each
//! format's reference, so a misspelt or invented key fails here and not in a user's cluster);
//! the systemd unit passes `systemd-analyze verify`; the Dockerfile builds where docker runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

fn yaml_documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy(file)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let value: serde_yaml_ng::Value =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("{file}: {e}"))
        })
        .collect()
}

/// A key tree: an object names the keys allowed there (`"*"`: any key, each with that
/// subtree); `[tree]` is a list of such; `"leaf"` is any scalar; `"any"` is anything
/// (free-form maps such as labels or a ConfigMap's data).
fn check(value: &Value, tree: &Value, at: &str, problems: &mut Vec<String>) {
    match (tree, value) {
        (Value::String(kind), _) if kind == "any" => {}
        (Value::String(kind), v) if kind == "leaf" => {
            if v.is_object() || v.is_array() {
                problems.push(format!("{at}: expected a value, found {v}"));
            }
        }
        (Value::Object(keys), Value::Object(map)) => {
            for (k, v) in map {
                match keys.get(k).or_else(|| keys.get("*")) {
                    Some(sub) => check(v, sub, &format!("{at}.{k}"), problems),
                    None => problems.push(format!("{at}: `{k}` is not a key here")),
                }
            }
        }
        (Value::Array(items), Value::Array(list)) if items.len() == 1 => {
            for (i, v) in list.iter().enumerate() {
                check(v, &items[0], &format!("{at}[{i}]"), problems);
            }
        }
        (tree, v) => problems.push(format!("{at}: {v} does not have the shape {tree}")),
    }
}

fn assert_keys(file: &str, value: &Value, tree: &Value) {
    let mut problems = Vec::new();
    check(value, tree, file, &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Traefik's file-provider dynamic configuration (routers, middlewares.forwardAuth, services).
fn traefik_tree() -> Value {
    json!({
        "http": {
            "routers": {"*": {
                "rule": "leaf", "entryPoints": ["leaf"], "middlewares": ["leaf"], "service": "leaf",
                "priority": "leaf", "tls": "any", "ruleSyntax": "leaf", "observability": "any"
            }},
            "middlewares": {"*": {
                "forwardAuth": {
                    "address": "leaf", "tls": "any", "trustForwardHeader": "leaf",
                    "authResponseHeaders": ["leaf"], "authResponseHeadersRegex": "leaf",
                    "authRequestHeaders": ["leaf"], "addAuthCookiesToResponse": ["leaf"],
                    "headerField": "leaf", "forwardBody": "leaf", "maxBodySize": "leaf",
                    "preserveLocationHeader": "leaf", "preserveRequestMethod": "leaf"
                }
            }},
            "services": {"*": {
                "loadBalancer": {
                    "servers": [{"url": "leaf", "weight": "leaf", "preservePath": "leaf"}],
                    "passHostHeader": "leaf", "healthCheck": "any", "sticky": "any",
                    "responseForwarding": "any", "serversTransport": "leaf"
                }
            }}
        }
    })
}

/// The Compose specification's keys, for the parts a compose file of ours uses.
fn compose_tree() -> Value {
    let healthcheck = json!({
        "test": ["leaf"], "interval": "leaf", "timeout": "leaf", "retries": "leaf",
        "start_period": "leaf", "start_interval": "leaf", "disable": "leaf"
    });
    json!({
        "name": "leaf",
        "services": {"*": {
            "build": {"context": "leaf", "dockerfile": "leaf", "args": "any", "target": "leaf"},
            "image": "leaf", "command": ["leaf"], "entrypoint": ["leaf"],
            "ports": ["leaf"], "expose": ["leaf"], "environment": {"*": "leaf"}, "env_file": ["leaf"],
            "configs": [{"source": "leaf", "target": "leaf", "uid": "leaf", "gid": "leaf", "mode": "leaf"}],
            "secrets": [{"source": "leaf", "target": "leaf"}],
            "depends_on": {"*": {"condition": "leaf", "restart": "leaf", "required": "leaf"}},
            "read_only": "leaf", "cap_drop": ["leaf"], "cap_add": ["leaf"], "security_opt": ["leaf"],
            "restart": "leaf", "stop_grace_period": "leaf", "stop_signal": "leaf", "user": "leaf",
            "healthcheck": healthcheck, "volumes": ["leaf"], "networks": ["leaf"], "labels": "any"
        }},
        "configs": {"*": {"content": "leaf", "file": "leaf", "environment": "leaf", "external": "leaf", "name": "leaf"}},
        "secrets": {"*": {"file": "leaf", "environment": "leaf", "external": "leaf", "name": "leaf"}},
        "networks": "any",
        "volumes": "any"
    })
}

/// The Kubernetes API's fields, for the kinds our manifest holds.
fn kubernetes_tree(kind: &str) -> Value {
    let metadata = json!({"name": "leaf", "namespace": "leaf", "labels": "any", "annotations": "any"});
    let selector = json!({"matchLabels": "any", "matchExpressions": "any"});
    let probe = json!({
        "httpGet": {"path": "leaf", "port": "leaf", "scheme": "leaf", "httpHeaders": "any", "host": "leaf"},
        "tcpSocket": "any", "exec": "any", "grpc": "any",
        "initialDelaySeconds": "leaf", "periodSeconds": "leaf", "timeoutSeconds": "leaf",
        "successThreshold": "leaf", "failureThreshold": "leaf", "terminationGracePeriodSeconds": "leaf"
    });
    let handler =
        json!({"exec": {"command": ["leaf"]}, "httpGet": "any", "tcpSocket": "any", "sleep": {"seconds": "leaf"}});
    let container = json!({
        "name": "leaf", "image": "leaf", "imagePullPolicy": "leaf", "args": ["leaf"], "command": ["leaf"],
        "ports": [{"name": "leaf", "containerPort": "leaf", "protocol": "leaf", "hostPort": "leaf", "hostIP": "leaf"}],
        "env": [{"name": "leaf", "value": "leaf", "valueFrom": {
            "secretKeyRef": {"name": "leaf", "key": "leaf", "optional": "leaf"},
            "configMapKeyRef": {"name": "leaf", "key": "leaf", "optional": "leaf"},
            "fieldRef": "any", "resourceFieldRef": "any"
        }}],
        "envFrom": "any",
        "volumeMounts": [{"name": "leaf", "mountPath": "leaf", "readOnly": "leaf", "subPath": "leaf"}],
        "livenessProbe": probe.clone(), "readinessProbe": probe.clone(), "startupProbe": probe,
        "lifecycle": {"preStop": handler.clone(), "postStart": handler},
        "resources": {"requests": {"cpu": "leaf", "memory": "leaf"}, "limits": {"cpu": "leaf", "memory": "leaf"}},
        "securityContext": {
            "allowPrivilegeEscalation": "leaf", "readOnlyRootFilesystem": "leaf", "runAsNonRoot": "leaf",
            "runAsUser": "leaf", "runAsGroup": "leaf", "privileged": "leaf",
            "capabilities": {"drop": ["leaf"], "add": ["leaf"]}, "seccompProfile": {"type": "leaf", "localhostProfile": "leaf"}
        }
    });
    let pod_spec = json!({
        "containers": [container.clone()], "initContainers": [container],
        "terminationGracePeriodSeconds": "leaf", "serviceAccountName": "leaf",
        "securityContext": {
            "runAsNonRoot": "leaf", "runAsUser": "leaf", "runAsGroup": "leaf", "fsGroup": "leaf",
            "seccompProfile": {"type": "leaf", "localhostProfile": "leaf"}
        },
        "volumes": [{"name": "leaf",
            "configMap": {"name": "leaf", "items": "any", "defaultMode": "leaf", "optional": "leaf"},
            "secret": {"secretName": "leaf", "items": "any", "defaultMode": "leaf", "optional": "leaf"},
            "emptyDir": "any"}],
        "affinity": "any", "topologySpreadConstraints": "any", "nodeSelector": "any", "tolerations": "any"
    });
    let spec = match kind {
        "ConfigMap" => {
            return json!({"apiVersion": "leaf", "kind": "leaf", "metadata": metadata, "data": {"*": "leaf"}, "binaryData": "any", "immutable": "leaf"});
        }
        "Deployment" => json!({
            "replicas": "leaf", "selector": selector, "minReadySeconds": "leaf", "revisionHistoryLimit": "leaf",
            "progressDeadlineSeconds": "leaf",
            "strategy": {"type": "leaf", "rollingUpdate": {"maxUnavailable": "leaf", "maxSurge": "leaf"}},
            "template": {"metadata": metadata.clone(), "spec": pod_spec}
        }),
        "Service" => json!({
            "selector": "any", "type": "leaf", "clusterIP": "leaf",
            "ports": [{"name": "leaf", "port": "leaf", "targetPort": "leaf", "protocol": "leaf", "nodePort": "leaf", "appProtocol": "leaf"}]
        }),
        "PodDisruptionBudget" => {
            json!({"minAvailable": "leaf", "maxUnavailable": "leaf", "selector": selector, "unhealthyPodEvictionPolicy": "leaf"})
        }
        other => panic!("no key tree for kind {other}"),
    };
    json!({"apiVersion": "leaf", "kind": "leaf", "metadata": metadata, "spec": spec})
}

#[test]
fn the_traefik_file_uses_only_traefik_keys_and_never_trusts_client_forward_headers() {
    let docs = yaml_documents("traefik.yml");
    assert_eq!(docs.len(), 1);
    assert_keys("traefik.yml", &docs[0], &traefik_tree());
    let auth = &docs[0]["http"]["middlewares"]["whopgate"]["forwardAuth"];
    assert_eq!(auth["trustForwardHeader"], false, "a client must not describe its own request");
    assert!(auth["address"].as_str().unwrap().ends_with("/.whopgate/auth"));
    let copied: Vec<&str> = auth["authResponseHeaders"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(copied, ["X-Whop-User-Id", "X-Whop-Access-Level", "X-Whop-Resource-Id", "X-Whopgate-Source"]);
    let router = &docs[0]["http"]["routers"]["app"];
    assert_eq!(router["middlewares"][0], "whopgate");
}

#[test]
fn the_compose_file_uses_only_compose_keys_and_publishes_only_the_gate() {
    let docs = yaml_documents("docker-compose.yml");
    assert_eq!(docs.len(), 1);
    assert_keys("docker-compose.yml", &docs[0], &compose_tree());
    let services = &docs[0]["services"];
    assert!(services["app"].get("ports").is_none(), "the app is reachable only through the gate");
    assert_eq!(services["whopgate"]["ports"], json!(["8080:8080"]), "the admin port is not published");
    // The config inside is a real whopgate config.
    let config = docs[0]["configs"]["whopgate_config"]["content"].as_str().unwrap().replace("$${", "${");
    let config = config.replace("${WHOP_API_KEY}", "k");
    whopgate::Config::from_toml(&config, "docker-compose.yml").unwrap();
}

#[test]
fn the_kubernetes_manifest_uses_only_api_fields_and_probes_the_admin_listener() {
    let docs = yaml_documents("kubernetes/whopgate-sidecar.yaml");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]);
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap();
        assert_keys(&format!("whopgate-sidecar.yaml ({kind})"), doc, &kubernetes_tree(kind));
    }
    let pod = &docs[1]["spec"]["template"]["spec"];
    let gate = pod["containers"].as_array().unwrap().iter().find(|c| c["name"] == "whopgate").unwrap();
    assert_eq!(gate["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "admin"}));
    assert_eq!(gate["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "admin"}));
    assert_eq!(gate["env"][0]["valueFrom"]["secretKeyRef"]["name"], "whopgate-secrets", "the key from a Secret");
    let config = docs[0]["data"]["whopgate.toml"].as_str().unwrap().replace("${WHOP_API_KEY}", "k");
    let config = whopgate::Config::from_toml(&config, "whopgate-sidecar.yaml").unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(config.limits.drain_timeout.as_secs() + 5 < grace, "the drain finishes before the kill");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !Path::new("/usr/bin/systemd-analyze").exists()
        && Command::new("systemd-analyze").arg("--version").output().is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    // The unit names /usr/local/bin/whopgate; verify checks that it exists, so point it at the
    // binary under test (the only change).
    let binary = crate::support::process::binary();
    let unit = std::fs::read_to_string(deploy("whopgate.service"))
        .unwrap()
        .replace("/usr/local/bin/whopgate", binary.to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("whopgate.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Messages about the host (no systemd running in a container) are not about the unit.
    let about_unit: Vec<&str> = err.lines().filter(|l| l.contains("whopgate.service")).collect();
    assert!(out.status.success() && about_unit.is_empty(), "{err}");
}

#[test]
fn the_dockerfile_builds_where_docker_runs() {
    let running = Command::new("docker").arg("info").output().map(|o| o.status.success()).unwrap_or(false);
    if !running {
        eprintln!("skipped: no docker daemon to build deploy/Dockerfile with");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("docker")
        .args(["build", "-q", "-f", "deploy/Dockerfile", "-t", "whopgate:test", "."])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
