//! Deployment artifacts: the Kubernetes kustomizations (deploy/kubernetes) render with `kubectl kustomize` and
//! validate offline against the Kubernetes schemas (kubernetes-validate; the Prometheus Operator's resources are
//! checked structurally here), keep what rpod relies on (one writer, or replicas only on a shared PostgreSQL
//! catalog; workload identity, probes on rpod's own port, the state volume at `state_dir`, a configuration
//! `rpod check-config` accepts), and agree with the container image (deploy/container/Dockerfile).
//! scripts/tools.d/kubernetes.sh installs the tools.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;

use crate::helpers::{printed, repo_root, rpod_bin, run_tool};

/// The Kubernetes version whose schemas the resources are validated against; kubernetes-validate ships them.
const KUBERNETES_VERSION: &str = "1.32.0";
/// Where the image puts rpod, and what the manifests run.
const BINARY: &str = "/usr/local/bin/rpod";
/// Resources without a schema in kubernetes-validate (Prometheus Operator CRDs), checked structurally instead.
const CRDS: [(&str, &str); 2] = [
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];
const BASE: &str = "deploy/kubernetes/base";
const OVERLAY: &str = "deploy/kubernetes/overlays/example";
/// Three replicas on a PostgreSQL catalog.
const HA: &str = "deploy/kubernetes/overlays/ha";
/// What `[catalog] url_env` names while `rpod check-config` reads a rendered configuration: a catalog that is never
/// reached (check-config does not connect).
const PLACEHOLDER_CATALOG_URL: &str = "postgres://rpod@127.0.0.1:5432/rpod?sslmode=verify-full";
const TOOLS: &str = "run scripts/tools.d/kubernetes.sh";

/// Runs a program from the repository root with `input` on standard input, and returns its standard output.
/// Panics with its standard error when it fails.
fn run(program: &str, args: &[&str], input: &str) -> String {
    let output = run_tool(program, args, input, "kubernetes.sh");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n(a tool missing? {TOOLS})",
        printed(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The documents of a YAML stream as JSON values (through `PyYAML`, which kubernetes-validate brings along), empty
/// documents left out.
fn yaml_documents(text: &str) -> Vec<Value> {
    let json = run(
        "python3",
        &[
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))",
        ],
        text,
    );
    serde_json::from_str(&json).unwrap()
}

/// `kubectl kustomize DIR`: the rendered YAML and its resources.
fn kustomize(dir: &str) -> (String, Vec<Value>) {
    let yaml = run("kubectl", &["kustomize", dir], "");
    let resources = yaml_documents(&yaml);
    assert!(!resources.is_empty(), "{dir} renders no resource");
    (yaml, resources)
}

fn is_crd(resource: &Value) -> bool {
    CRDS.iter()
        .any(|(api, kind)| resource["apiVersion"] == *api && resource["kind"] == *kind)
}

/// Validates every resource of `yaml` against the Kubernetes schemas, strictly (unknown fields are errors), and
/// checks that kubernetes-validate found a schema for each resource that is not one of [`CRDS`]: for anything
/// else without a schema (a mistyped apiVersion, say) it only warns.
fn validate_offline(what: &str, yaml: &str, resources: &[Value]) {
    let output = run(
        "python3",
        &[
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            "-",
        ],
        yaml,
    );
    let version = KUBERNETES_VERSION.trim_end_matches(".0");
    for resource in resources {
        let kind = resource["kind"].as_str().unwrap();
        let name = resource["metadata"]["name"].as_str().unwrap();
        let line = if is_crd(resource) {
            format!(
                "WARN - Couldn't find schema for kind {kind} with api version {} for kubernetes version {version}",
                resource["apiVersion"].as_str().unwrap()
            )
        } else {
            format!(
                "INFO - passed for resource {}/{name} against version {version}",
                kind.to_lowercase()
            )
        };
        assert!(
            output.lines().any(|l| l == line),
            "{what}: {kind} {name} was not validated; expected {line:?} in:\n{output}"
        );
    }
    let expected = resources.len();
    let reported = output.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(
        reported, expected,
        "{what}: one line per resource expected:\n{output}"
    );
}

/// The Prometheus Operator's resources have no schema here: check what the operator needs of them.
fn check_crds_structurally(what: &str, resources: &[Value]) {
    for monitor in of_kind(resources, "ServiceMonitor") {
        assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1", "{what}");
        let labels = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: ServiceMonitor without spec.selector.matchLabels"));
        assert!(!labels.is_empty(), "{what}: empty ServiceMonitor selector");
        let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
        assert!(
            !endpoints.is_empty(),
            "{what}: ServiceMonitor without endpoints"
        );
        for endpoint in endpoints {
            assert!(
                endpoint["port"].is_string(),
                "{what}: endpoint without a port name: {endpoint}"
            );
            assert!(
                endpoint["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with('/')),
                "{what}: endpoint without a path: {endpoint}"
            );
        }
    }
    for rule in of_kind(resources, "PrometheusRule") {
        assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1", "{what}");
        let groups = rule["spec"]["groups"].as_array().unwrap();
        assert!(!groups.is_empty(), "{what}: PrometheusRule without groups");
        for group in groups {
            assert!(
                group["name"].as_str().is_some_and(|n| !n.is_empty()),
                "{what}: {group}"
            );
            let rules = group["rules"].as_array().unwrap();
            assert!(!rules.is_empty(), "{what}: group without rules");
            for rule in rules {
                let alert = rule["alert"].as_str();
                assert!(
                    alert.is_some_and(|a| !a.is_empty()) != rule["record"].is_string(),
                    "{what}: a rule is either an alert or a recording rule: {rule}"
                );
                assert!(
                    rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                    "{what}: rule without expr: {rule}"
                );
                if let Some(alert) = alert {
                    assert!(
                        rule["labels"]["severity"].is_string(),
                        "{what}: {alert} has no severity"
                    );
                    assert!(
                        rule["annotations"]["summary"].is_string(),
                        "{what}: {alert} has no summary"
                    );
                }
            }
        }
    }
}

fn of_kind<'a>(resources: &'a [Value], kind: &str) -> Vec<&'a Value> {
    resources.iter().filter(|r| r["kind"] == kind).collect()
}

fn one_of_kind<'a>(resources: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(resources, kind);
    assert_eq!(found.len(), 1, "exactly one {kind} expected");
    found[0]
}

fn named<'a>(resources: &'a [Value], kind: &str, name: &str) -> &'a Value {
    resources
        .iter()
        .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default()
}

/// The container port a probe or service refers to, by name or by number.
fn container_port(container: &Value, port: &Value) -> u16 {
    let ports = container["ports"].as_array().unwrap();
    let found = match port {
        Value::String(name) => ports.iter().find(|p| p["name"] == *name),
        Value::Number(_) => ports.iter().find(|p| p["containerPort"] == *port),
        _ => None,
    };
    let found = found.unwrap_or_else(|| panic!("{port} is not a port of the container"));
    u16::try_from(found["containerPort"].as_u64().unwrap()).unwrap()
}

fn matches_labels(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(key, value)| labels[key] == *value)
}

/// The rendered Deployment's pod, its rpod container, and the configuration file the container reads, followed
/// from `RPOD_CONFIG` through the volume mount to the `ConfigMap`.
struct Rendered<'a> {
    pod: &'a Value,
    container: &'a Value,
    config_text: String,
    config: toml::Table,
}

impl<'a> Rendered<'a> {
    fn new(resources: &'a [Value]) -> Self {
        let deployment = one_of_kind(resources, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "one container: rpod");
        let container = &containers[0];
        let config_path = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "RPOD_CONFIG")
            .and_then(|e| e["value"].as_str())
            .expect("RPOD_CONFIG is set in the container");
        let (dir, file) = config_path.rsplit_once('/').unwrap();
        let volume = volume_at(pod, container, dir);
        let config_map = volume["configMap"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{dir} is not a ConfigMap volume"));
        let config_text = named(resources, "ConfigMap", config_map)["data"][file]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap {config_map} has no {file}"))
            .to_string();
        let config = config_text.parse::<toml::Table>().unwrap();
        Self {
            pod,
            container,
            config_text,
            config,
        }
    }

    fn config_str(&self, table: &str, key: &str) -> Option<&str> {
        self.config.get(table)?.get(key)?.as_str()
    }

    fn listen(&self) -> SocketAddr {
        self.config_str("daemon", "listen")
            .expect("[daemon] listen is set")
            .parse()
            .unwrap()
    }
}

/// The volume mounted at `path` in `container`.
fn volume_at<'a>(pod: &'a Value, container: &Value, path: &str) -> &'a Value {
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("nothing is mounted at {path}"));
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("the volume mounted at {path} is not defined"))
}

/// Runs `rpod check-config` on the rendered configuration. The webhook secret's, the API token's and the catalog
/// password's mounts do not exist here, so stand-in files take their places; the variable `[catalog] url_env`
/// names, which the Deployment sets from a Secret, holds [`PLACEHOLDER_CATALOG_URL`].
fn check_config(what: &str, rendered: &Rendered) {
    check_config_with(what, rendered, PLACEHOLDER_CATALOG_URL);
}

/// [`check_config`], with `catalog_url` in the variable `[catalog] url_env` names.
fn check_config_with(what: &str, rendered: &Rendered, catalog_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rendered.config.clone();
    if let Some(daemon) = config.get_mut("daemon").and_then(|d| d.as_table_mut())
        && daemon.contains_key("api_token_file")
    {
        let token = dir.path().join("api-token");
        std::fs::write(&token, "0123456789abcdef0123456789abcdef").unwrap();
        daemon.insert(
            "api_token_file".into(),
            toml::Value::String(token.to_str().unwrap().into()),
        );
    }
    if let Some(webhook) = config.get_mut("webhook").and_then(|w| w.as_table_mut()) {
        let secret = dir.path().join("webhook-secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
        webhook.insert(
            "secret_file".into(),
            toml::Value::String(secret.to_str().unwrap().into()),
        );
    }
    let mut command = Command::new(rpod_bin());
    if let Some(catalog) = config.get_mut("catalog").and_then(|c| c.as_table_mut()) {
        if let Some(var) = catalog.get("url_env").and_then(|v| v.as_str()) {
            command.env(var, catalog_url);
        }
        if catalog.contains_key("password_file") {
            let password = dir.path().join("catalog-password");
            std::fs::write(&password, "0123456789abcdef0123456789abcdef").unwrap();
            catalog.insert(
                "password_file".into(),
                toml::Value::String(password.to_str().unwrap().into()),
            );
        }
    }
    let path = dir.path().join("rpod.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let output = command
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env_remove("RPOD_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{what}: rpod check-config rejects the ConfigMap's rpod.toml:\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        rendered.config_text
    );
}

/// What rpod needs from its pod, whatever the overlay.
fn check_invariants(what: &str, resources: &[Value]) {
    let deployment = one_of_kind(resources, "Deployment");
    let rendered = Rendered::new(resources);
    // Without [catalog] url (or url_env) the catalog is the SQLite file in state_dir, which one process alone may
    // write.
    let shared_catalog = ["url", "url_env"]
        .iter()
        .any(|key| rendered.config_str("catalog", key).is_some());
    if !shared_catalog {
        assert_eq!(deployment["spec"]["replicas"], 1, "{what}: one replica");
        assert_eq!(
            deployment["spec"]["strategy"]["type"], "Recreate",
            "{what}: never two pods at once, not even during a rollout"
        );
    }
    let (pod, container) = (rendered.pod, rendered.container);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];

    // The image and what it runs.
    let mut argv = strings(&container["command"]);
    argv.extend(strings(&container["args"]));
    assert_eq!(
        argv,
        [BINARY, "run"],
        "{what}: the container runs `rpod run`"
    );
    let image = container["image"].as_str().unwrap();
    let tag = image.rsplit_once(':').map(|(_, tag)| tag);
    assert!(
        tag.is_some_and(|t| !t.contains('/') && t != "latest"),
        "{what}: the image {image} has a tag other than latest"
    );

    // AKS workload identity.
    assert_eq!(
        rendered.config_str("azure", "credential"),
        Some("workload_identity"),
        "{what}"
    );
    assert_eq!(
        labels["azure.workload.identity/use"], "true",
        "{what}: pod label"
    );
    let account = named(
        resources,
        "ServiceAccount",
        pod["serviceAccountName"].as_str().unwrap(),
    );
    let client_id = account["metadata"]["annotations"]["azure.workload.identity/client-id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: the ServiceAccount has no client-id annotation"));
    assert!(
        client_id.len() == 36 && client_id.split('-').map(str::len).eq([8, 4, 4, 4, 12]),
        "{what}: client id {client_id:?} is not a GUID"
    );

    // Non-root, read-only, no privileges: the "restricted" Pod Security Standard.
    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true, "{what}");
    assert!(pod_security["runAsUser"].as_u64().unwrap() > 0, "{what}");
    assert_eq!(
        pod_security["fsGroup"], pod_security["runAsGroup"],
        "{what}"
    );
    assert_eq!(
        pod_security["seccompProfile"]["type"], "RuntimeDefault",
        "{what}"
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(
        strings(&security["capabilities"]["drop"]),
        ["ALL"],
        "{what}"
    );
    assert!(security["privileged"] != true, "{what}");

    // Probes on the port rpod listens on, which must be reachable from the kubelet.
    let listen = rendered.listen();
    assert!(
        listen.ip().is_unspecified(),
        "{what}: [daemon] listen {listen} is not reachable from outside the pod"
    );
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{what}: {probe}");
        assert_eq!(
            container_port(container, &get["port"]),
            listen.port(),
            "{what}: {probe} on [daemon] listen's port"
        );
    }

    // A listener every pod in the cluster can reach: the API's mutating requests need a token, mounted from a
    // Secret that the kustomization does not create (so `apply -k` never overwrites it).
    let token = rendered
        .config_str("daemon", "api_token_file")
        .unwrap_or_else(|| panic!("{what}: [daemon] listen {listen} without api_token_file"));
    let token_dir = std::path::Path::new(token)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    let secret = volume_at(pod, container, token_dir);
    let secret_name = secret["secret"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: the API token is not mounted from a Secret"));
    assert!(
        !resources
            .iter()
            .any(|r| r["kind"] == "Secret" && r["metadata"]["name"] == secret_name),
        "{what}: the kustomization must not carry the Secret {secret_name}"
    );

    // The SQLite catalog on the persistent volume at state_dir; with a shared catalog, state_dir (its lock file) is
    // each pod's own emptyDir, as one disk would be shared by every replica. Nothing else writable but an emptyDir
    // /tmp.
    let state_dir = rendered
        .config_str("daemon", "state_dir")
        .expect("[daemon] state_dir is set");
    let state = volume_at(pod, container, state_dir);
    if shared_catalog {
        assert!(
            state["emptyDir"].is_object() && state["persistentVolumeClaim"].is_null(),
            "{what}: {state_dir} is not each replica's own emptyDir: {state}"
        );
    } else {
        let claim = state["persistentVolumeClaim"]["claimName"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {state_dir} is not a persistent volume"));
        let claim = named(resources, "PersistentVolumeClaim", claim);
        assert_eq!(
            strings(&claim["spec"]["accessModes"]),
            ["ReadWriteOnce"],
            "{what}"
        );
    }
    assert!(
        volume_at(pod, container, "/tmp")["emptyDir"].is_object(),
        "{what}: /tmp"
    );
    for mount in container["volumeMounts"].as_array().unwrap() {
        let path = mount["mountPath"].as_str().unwrap();
        let volume = volume_at(pod, container, path);
        assert!(
            mount["readOnly"] == true || path == state_dir || volume["emptyDir"].is_object(),
            "{what}: {path} is writable"
        );
    }

    // The metrics Service and the ServiceMonitor reach that port, in the job the alert rules expect.
    let monitor = one_of_kind(resources, "ServiceMonitor");
    let selector = &monitor["spec"]["selector"]["matchLabels"];
    let services: Vec<&Value> = of_kind(resources, "Service")
        .into_iter()
        .filter(|s| matches_labels(selector, &s["metadata"]["labels"]))
        .collect();
    assert_eq!(
        services.len(),
        1,
        "{what}: the ServiceMonitor selects one Service"
    );
    let service = services[0];
    assert_eq!(
        service["metadata"]["name"], "rpod",
        "{what}: Prometheus names the job after the Service, and the alert rules expect job=\"rpod\""
    );
    assert!(monitor["spec"]["jobLabel"].is_null(), "{what}");
    assert!(
        matches_labels(&service["spec"]["selector"], labels),
        "{what}"
    );
    assert_eq!(
        service["spec"]["type"], "ClusterIP",
        "{what}: the API has no authentication"
    );
    for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
        assert_eq!(endpoint["path"], "/metrics", "{what}");
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == endpoint["port"])
            .unwrap_or_else(|| panic!("{what}: the Service has no port {}", endpoint["port"]));
        assert_eq!(
            container_port(container, &port["targetPort"]),
            listen.port(),
            "{what}"
        );
    }

    check_config(what, &rendered);
}

#[test]
fn kustomizations_render_and_validate_offline() {
    for dir in [BASE, OVERLAY, HA] {
        let (yaml, resources) = kustomize(dir);
        validate_offline(dir, &yaml, &resources);
        check_crds_structurally(dir, &resources);
    }
}

#[test]
fn base_and_overlay_keep_what_rpod_needs() {
    for dir in [BASE, OVERLAY, HA] {
        let (_, resources) = kustomize(dir);
        check_invariants(dir, &resources);
    }
    // The base leaves the namespace to the overlays; an overlay's namespace enforces the restricted standard.
    let (_, base) = kustomize(BASE);
    assert!(base.iter().all(|r| r["metadata"]["namespace"].is_null()));
    for dir in [OVERLAY, HA] {
        let (_, overlay) = kustomize(dir);
        let namespace = one_of_kind(&overlay, "Namespace");
        assert_eq!(
            namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
            "{dir}"
        );
        let name = &namespace["metadata"]["name"];
        assert!(
            overlay
                .iter()
                .filter(|r| r["kind"] != "Namespace")
                .all(|r| r["metadata"]["namespace"] == *name),
            "{dir}"
        );
    }
}

#[test]
fn overlay_exposes_only_the_webhook_to_event_grid() {
    for dir in [OVERLAY, HA] {
        exposes_only_the_webhook_to_event_grid(dir);
    }
}

/// The overlay in `dir` routes Event Grid's deliveries, over HTTPS, to the webhook's own listener and nothing else,
/// with the shared secret mounted from a Secret it does not carry.
fn exposes_only_the_webhook_to_event_grid(dir: &str) {
    let (_, resources) = kustomize(dir);
    let rendered = Rendered::new(&resources);
    let container = rendered.container;
    let listen: SocketAddr = rendered
        .config_str("webhook", "listen")
        .unwrap_or_else(|| panic!("{dir} gives the webhook its own listener"))
        .parse()
        .unwrap();
    assert!(listen.ip().is_unspecified());
    assert_ne!(listen.port(), rendered.listen().port());

    // The ingress routes /hooks/eventgrid, and nothing else, to a Service on the webhook's listener, with TLS.
    let ingress = one_of_kind(&resources, "Ingress");
    assert!(
        !ingress["spec"]["tls"].as_array().unwrap().is_empty(),
        "{dir}: Event Grid needs HTTPS"
    );
    let mut backends = Vec::new();
    for rule in ingress["spec"]["rules"].as_array().unwrap() {
        for path in rule["http"]["paths"].as_array().unwrap() {
            assert_eq!(path["path"], "/hooks/eventgrid");
            assert_eq!(path["pathType"], "Exact");
            backends.push(&path["backend"]["service"]);
        }
    }
    assert!(!backends.is_empty());
    for backend in backends {
        let service = named(&resources, "Service", backend["name"].as_str().unwrap());
        assert!(matches_labels(
            &service["spec"]["selector"],
            &one_of_kind(&resources, "Deployment")["spec"]["template"]["metadata"]["labels"]
        ));
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| {
                p["name"] == backend["port"]["name"] || p["port"] == backend["port"]["number"]
            })
            .expect("the ingress's port is one of the Service's");
        assert_eq!(
            container_port(container, &port["targetPort"]),
            listen.port()
        );
    }

    // The secret file is the mounted Secret's item, and the example Secret has that name and key.
    let secret_file = rendered
        .config_str("webhook", "secret_file")
        .expect("[webhook] secret_file");
    let (mount_dir, file) = secret_file.rsplit_once('/').unwrap();
    let volume = volume_at(rendered.pod, container, mount_dir);
    let item = volume["secret"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == file)
        .unwrap_or_else(|| panic!("{dir}: the Secret volume at {mount_dir} has no item {file}"));
    assert_eq!(
        volume["secret"]["defaultMode"].as_u64().unwrap() & 0o007,
        0,
        "{dir}: the secret is not readable by others"
    );
    assert!(
        of_kind(&resources, "Secret").is_empty(),
        "{dir}: no Secret is generated: `kubectl apply -k` would overwrite the real one"
    );
    let example_path = repo_root().join(dir).join("webhook-secret.example.yaml");
    let example_yaml = std::fs::read_to_string(&example_path).unwrap();
    let example = yaml_documents(&example_yaml);
    validate_offline(
        &format!("{dir}/webhook-secret.example.yaml"),
        &example_yaml,
        &example,
    );
    let secret = one_of_kind(&example, "Secret");
    assert_eq!(secret["metadata"]["name"], volume["secret"]["secretName"]);
    assert_eq!(
        secret["metadata"]["namespace"],
        one_of_kind(&resources, "Namespace")["metadata"]["name"]
    );
    assert!(secret["stringData"][item["key"].as_str().unwrap()].is_string());

    // The NetworkPolicy names ports the container has.
    for policy in of_kind(&resources, "NetworkPolicy") {
        for rule in policy["spec"]["ingress"].as_array().unwrap() {
            for port in rule["ports"].as_array().unwrap() {
                container_port(container, &port["port"]);
            }
        }
    }
}

#[test]
fn ha_overlay_runs_three_replicas_on_the_postgresql_catalog() {
    let (_, resources) = kustomize(HA);
    let rendered = Rendered::new(&resources);
    let (pod, container) = (rendered.pod, rendered.container);
    let deployment = one_of_kind(&resources, "Deployment");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];

    // Three replicas, rolled one at a time: a new pod serves before an old one stops, and it counts as ready only
    // once it can write the catalog.
    assert_eq!(deployment["spec"]["replicas"], 3);
    let strategy = &deployment["spec"]["strategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxSurge"], 1);
    assert!(
        strategy["rollingUpdate"]["maxUnavailable"]
            .as_u64()
            .is_some_and(|n| n <= 1),
        "a rollout takes at most one pod away: {strategy}"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for constraint in pod["topologySpreadConstraints"]
        .as_array()
        .expect("the replicas are spread over nodes")
    {
        assert!(
            matches_labels(&constraint["labelSelector"]["matchLabels"], labels),
            "a spread constraint that does not select rpod's pods spreads nothing: {constraint}"
        );
    }

    // Drains take one pod at a time, and are not blocked while the catalog is down (no pod is ready then).
    let budget = one_of_kind(&resources, "PodDisruptionBudget");
    assert_eq!(budget["apiVersion"], "policy/v1");
    let selector = &budget["spec"]["selector"];
    assert!(selector["matchExpressions"].is_null());
    assert!(
        matches_labels(&selector["matchLabels"], labels),
        "the PodDisruptionBudget selects rpod's pods"
    );
    let disruptions = match (
        budget["spec"]["maxUnavailable"].as_u64(),
        budget["spec"]["minAvailable"].as_u64(),
    ) {
        (Some(max_unavailable), None) => max_unavailable,
        (None, Some(min_available)) => 3 - min_available,
        _ => panic!("the PodDisruptionBudget sets maxUnavailable or minAvailable as a number"),
    };
    assert_eq!(disruptions, 1, "one pod at a time may be evicted");
    assert_eq!(budget["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");

    // No disk: the catalog is in PostgreSQL, and state_dir (the lock file) is each pod's own emptyDir.
    assert!(
        of_kind(&resources, "PersistentVolumeClaim").is_empty(),
        "no PersistentVolumeClaim is created"
    );
    for volume in pod["volumes"].as_array().unwrap() {
        assert!(
            volume["persistentVolumeClaim"].is_null(),
            "no volume waits for a claim: {volume}"
        );
    }
    let state_dir = rendered.config_str("daemon", "state_dir").unwrap();
    assert!(volume_at(pod, container, state_dir)["emptyDir"].is_object());

    // The catalog's URL comes from a Secret through the variable [catalog] url_env names, never from the
    // ConfigMap.
    assert_eq!(rendered.config_str("catalog", "url"), None);
    let url_env = rendered
        .config_str("catalog", "url_env")
        .expect("[catalog] url_env");
    let env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == url_env)
        .unwrap_or_else(|| panic!("the container does not set {url_env}"));
    assert!(env["value"].is_null());
    let url_ref = &env["valueFrom"]["secretKeyRef"];
    assert!(
        url_ref["name"].is_string() && url_ref["key"].is_string(),
        "{url_env} comes from a Secret: {env}"
    );
    assert_ne!(
        url_ref["optional"], true,
        "without the Secret the pod must not start"
    );

    // The password is the item of a read-only Secret volume, at the path [catalog] password_file names, readable
    // by rpod's group only.
    let password_file = rendered
        .config_str("catalog", "password_file")
        .expect("[catalog] password_file");
    let (dir, file) = password_file.rsplit_once('/').unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {dir}"));
    assert_eq!(mount["readOnly"], true, "{dir} is read-only");
    let volume = volume_at(pod, container, dir);
    let password_item = volume["secret"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{dir} is not a Secret volume with items: {volume}"))
        .iter()
        .find(|i| i["path"] == file)
        .unwrap_or_else(|| panic!("the Secret volume at {dir} has no item {file}"));
    assert_eq!(
        volume["secret"]["defaultMode"].as_u64().unwrap() & 0o007,
        0,
        "the password is not readable by others"
    );

    // Neither Secret is generated (`kubectl apply -k` would overwrite the real one); the example Secret carries
    // both keys under the names the Deployment uses, and a URL rpod accepts.
    assert!(of_kind(&resources, "Secret").is_empty());
    let example_yaml =
        std::fs::read_to_string(repo_root().join(HA).join("catalog-secret.example.yaml")).unwrap();
    let example = yaml_documents(&example_yaml);
    validate_offline("catalog-secret.example.yaml", &example_yaml, &example);
    let secret = one_of_kind(&example, "Secret");
    assert_eq!(
        secret["metadata"]["namespace"],
        one_of_kind(&resources, "Namespace")["metadata"]["name"]
    );
    assert_eq!(secret["metadata"]["name"], url_ref["name"]);
    assert_eq!(secret["metadata"]["name"], volume["secret"]["secretName"]);
    assert!(secret["stringData"][password_item["key"].as_str().unwrap()].is_string());
    let example_url = secret["stringData"][url_ref["key"].as_str().unwrap()]
        .as_str()
        .expect("the example Secret has the URL's key");

    // rpod accepts the rendered rpod.toml with a URL in the variable: the placeholder, and the example's.
    check_config(HA, &rendered);
    check_config_with("catalog-secret.example.yaml", &rendered, example_url);
}

#[test]
fn prometheus_rule_carries_the_shipped_alert_rules() {
    let path = repo_root().join("deploy/prometheus/rpod-alerts.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let rules = yaml_documents(&text);
    let (_, resources) = kustomize(BASE);
    let rule = one_of_kind(&resources, "PrometheusRule");
    assert!(
        rule["spec"]["groups"] == rules[0]["groups"],
        "deploy/kubernetes/base/prometheusrule.yaml differs from deploy/prometheus/rpod-alerts.yml: run \
         deploy/kubernetes/update-prometheusrule.sh"
    );
}

/// One Dockerfile instruction: its keyword (upper case) and the rest, continuation lines joined.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        instructions.push((keyword.to_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    instructions
}

#[test]
fn dockerfile_builds_a_non_root_image_that_runs_rpod() {
    let path = repo_root().join("deploy/container/Dockerfile");
    let instructions = dockerfile_instructions(&std::fs::read_to_string(path).unwrap());
    let (_, resources) = kustomize(BASE);
    let rendered = Rendered::new(&resources);

    // Multi-stage, on pinned base images.
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut aliases = Vec::new();
    for (keyword, rest) in &instructions {
        if keyword == "FROM" {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let image = words[0];
            if !aliases.contains(&image.to_string()) {
                let tag = image.rsplit_once(':').map(|(_, tag)| tag);
                assert!(
                    image.contains('@') || tag.is_some_and(|t| !t.contains('/') && t != "latest"),
                    "base image {image} needs a tag other than latest"
                );
            }
            if let [_, alias, name] = words[..]
                && alias.eq_ignore_ascii_case("as")
            {
                aliases.push(name.to_string());
            }
            stages.push(Vec::new());
        } else {
            stages
                .last_mut()
                .expect("the Dockerfile starts with FROM")
                .push((keyword.clone(), rest.clone()));
        }
    }
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let runtime: BTreeMap<&str, &str> = stages
        .last()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    // The runtime stage: rpod's binary where the manifests run it, a numeric non-root user (the pod's),
    // `rpod run`, rpod's port.
    assert!(
        stages
            .last()
            .unwrap()
            .iter()
            .any(|(keyword, rest)| keyword == "COPY"
                && rest.split_whitespace().last() == Some(BINARY)),
        "the runtime stage copies rpod to {BINARY}"
    );
    let user = runtime.get("USER").expect("the runtime stage sets USER");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let uid: u32 = uid.parse().expect("USER is numeric");
    let gid: u32 = gid.parse().expect("USER's group is numeric");
    assert_ne!(uid, 0, "USER is not root");
    assert_eq!(rendered.pod["securityContext"]["runAsUser"], uid);
    assert_eq!(rendered.pod["securityContext"]["runAsGroup"], gid);
    let entrypoint: Vec<String> =
        serde_json::from_str(runtime.get("ENTRYPOINT").expect("ENTRYPOINT")).expect("exec form");
    assert_eq!(entrypoint, [BINARY, "run"]);
    assert_eq!(
        strings(&rendered.container["command"])[0],
        entrypoint[0],
        "the manifests run the image's binary"
    );
    let exposed = runtime.get("EXPOSE").unwrap();
    assert_eq!(*exposed, rendered.listen().port().to_string());
    let config_env = rendered.container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "RPOD_CONFIG")
        .unwrap();
    assert_eq!(
        runtime.get("ENV").copied(),
        Some(format!("RPOD_CONFIG={}", config_env["value"].as_str().unwrap()).as_str())
    );

    // Nothing secret is baked in.
    for (keyword, rest) in &instructions {
        if ["ENV", "ARG", "COPY", "ADD"].contains(&keyword.as_str()) {
            let lower = rest.to_lowercase();
            for word in [
                "key",
                "secret",
                "token",
                "password",
                "passwd",
                "credential",
                ".pem",
            ] {
                assert!(
                    !lower.contains(word),
                    "{keyword} {rest} looks like a secret"
                );
            }
        }
    }

    // The build context leaves out build output, npm packages and git history.
    let ignored = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignored.lines().map(str::trim).collect();
    for entry in [".git", "target", "node_modules"] {
        assert!(ignored.contains(&entry), ".dockerignore leaves out {entry}");
    }
}
