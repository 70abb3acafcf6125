//! The deployment files under `deploy/`. No container engine runs them here, so they are parsed and
//! checked against what the code uses: the services `emporium serve` knows and their ports in the
//! `distributed` profile (compiled into the binary), the gateway's port, the probe paths, the
//! settings' variable names. The container health check script runs against a real process.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Stdio,
};

use emporium_platform::config::Config;
use serde_json::Value;

use crate::support::{Platform, SECRET, command, gateway_variable};

/// The paths `emporium_platform::http::ops_router` serves.
const READINESS: &str = "/health";
const LIVENESS: &str = "/health/live";
const METRICS: &str = "/metrics";

/// Services whose consumers must be able to scale out on Kubernetes.
const AUTOSCALED_CONSUMERS: [&str; 4] = ["inventory", "orders", "payments", "notifications"];

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy(relative: &str) -> PathBuf {
    repository().join("deploy").join(relative)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(relative: &str) -> Value {
    let path = deploy(relative);
    serde_saphyr::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("deploy/{relative} is not valid YAML: {e}"))
}

fn yaml_documents(relative: &str) -> Vec<Value> {
    let path = deploy(relative);
    serde_saphyr::from_multiple::<Value>(&read(&path))
        .unwrap_or_else(|e| panic!("deploy/{relative} is not valid YAML: {e}"))
        .into_iter()
        .filter(|document| !document.is_null())
        .collect()
}

/// A scalar as text: YAML writes `KAFKA_NODE_ID: 1` and `EMPORIUM_LOG: info` alike.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().map(text).collect())
        .unwrap_or_default()
}

/// The port at the end of `http://host:port` or `host:port`.
fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in `{address}`"))
}

/// Every service with its port, from the `distributed` profile the binary compiles in (the unit test
/// in `src/openapi.rs` checks that it names exactly the services `emporium serve` knows).
fn services() -> BTreeMap<String, u16> {
    let config = Config::defaults(Some("distributed")).unwrap();
    let services: BTreeMap<String, u16> = config
        .gateway
        .services
        .iter()
        .map(|(name, url)| (name.clone(), port_of(url)))
        .collect();
    assert!(
        services.len() >= 10,
        "the distributed profile lists the services: {services:?}"
    );
    let ports: BTreeSet<u16> = services.values().copied().collect();
    assert_eq!(
        ports.len(),
        services.len(),
        "each service has its own port in config/distributed.toml: {services:?}"
    );
    services
}

/// The gateway's port: the default `listen` address.
fn gateway_port() -> u16 {
    Config::defaults(None).unwrap().listen.port()
}

/// The gateway's service addresses among `variables`, by service name.
fn gateway_addresses(variables: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    variables
        .iter()
        .filter_map(|(key, value)| {
            key.strip_prefix("EMPORIUM_GATEWAY__SERVICES__")
                .map(|name| (name.to_lowercase(), value.clone()))
        })
        .collect()
}

#[tokio::test]
async fn the_binary_serves_every_service_of_the_distributed_profile() {
    let stderr = refused_start(&["serve", "no-such-service"], &[]).await;
    for name in services().keys() {
        assert!(
            stderr.contains(name.as_str()),
            "`emporium serve` lists the services it knows, and `{name}` (config/distributed.toml) is not among them: {stderr}"
        );
    }
}

/// A compose service: its name and definition.
struct Container<'a> {
    name: &'a str,
    spec: &'a Value,
}

impl Container<'_> {
    fn command(&self) -> Vec<String> {
        strings(&self.spec["command"])
    }

    /// `environment`, written as a map or as a list of `KEY=value`.
    fn environment(&self) -> BTreeMap<String, String> {
        match &self.spec["environment"] {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    let item = text(item);
                    let (key, value) = item.split_once('=').unwrap_or((&item, ""));
                    (key.to_owned(), value.to_owned())
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// `depends_on`: each dependency with its condition (`service_started` when not given).
    fn depends_on(&self) -> BTreeMap<String, String> {
        match &self.spec["depends_on"] {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    let condition = v["condition"].as_str().unwrap_or("service_started");
                    (k.clone(), condition.to_owned())
                })
                .collect(),
            Value::Array(items) => items
                .iter()
                .map(|item| (text(item), "service_started".to_owned()))
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    fn listen_port(&self) -> u16 {
        let listen = self
            .environment()
            .get("EMPORIUM_LISTEN")
            .cloned()
            .unwrap_or_else(|| panic!("compose service `{}` sets no EMPORIUM_LISTEN", self.name));
        port_of(&listen)
    }
}

fn containers(compose: &Value) -> Vec<Container<'_>> {
    compose["services"]
        .as_object()
        .expect("deploy/compose.yaml has services")
        .iter()
        .map(|(name, spec)| Container { name, spec })
        .collect()
}

/// Where each process of deploy/compose.yaml listens (`container:port`), by what it runs: a
/// service's name, or `gateway`.
fn compose_addresses(compose: &Value) -> BTreeMap<String, String> {
    containers(compose)
        .iter()
        .filter_map(|c| {
            let process = match c.command().as_slice() {
                [serve, name] if serve == "serve" => name.clone(),
                [gateway] if gateway == "gateway" => gateway.clone(),
                _ => return None,
            };
            Some((process, format!("{}:{}", c.name, c.listen_port())))
        })
        .collect()
}

/// `postgres://user:pass@host:port/db` → `host`.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    host_port.split(':').next().unwrap_or(host_port)
}

#[test]
fn compose_runs_every_service_on_its_port_with_the_gateway_in_front() {
    let compose = yaml("compose.yaml");
    let containers = containers(&compose);
    let names: BTreeSet<&str> = containers.iter().map(|c| c.name).collect();
    let find = |command: &[&str]| -> Vec<&Container<'_>> {
        containers
            .iter()
            .filter(|c| c.command() == command)
            .collect()
    };
    let services = services();

    // Every service, once, on its port, after the migration.
    let mut served = BTreeMap::new();
    for (name, port) in &services {
        let running = find(&["serve", name]);
        assert_eq!(
            running.len(),
            1,
            "deploy/compose.yaml runs `serve {name}` in exactly one service"
        );
        let container = running[0];
        assert_eq!(
            container.listen_port(),
            *port,
            "compose service `{}` listens on the port config/distributed.toml gives {name}",
            container.name
        );
        assert_eq!(
            container.depends_on().get("migrate").map(String::as_str),
            Some("service_completed_successfully"),
            "compose service `{}` starts after the migration",
            container.name
        );
        served.insert(name.as_str(), container);
    }
    let serves_unknown: Vec<String> = containers
        .iter()
        .filter_map(|c| match c.command().as_slice() {
            [serve, name] if serve == "serve" && !services.contains_key(name) => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert!(
        serves_unknown.is_empty(),
        "deploy/compose.yaml serves services the binary does not know: {serves_unknown:?}"
    );

    // The gateway, on the default port, published, with every service's container address.
    let gateway = find(&["gateway"]);
    assert_eq!(
        gateway.len(),
        1,
        "deploy/compose.yaml runs the gateway once"
    );
    let gateway = gateway[0];
    assert_eq!(gateway.listen_port(), gateway_port());
    let published = strings(&gateway.spec["ports"]);
    assert!(
        published.contains(&format!("{0}:{0}", gateway_port())),
        "the gateway's port is published: {published:?}"
    );
    let expected: BTreeMap<String, String> = services
        .iter()
        .map(|(name, port)| {
            let host = served[name.as_str()].name;
            (name.clone(), format!("http://{host}:{port}"))
        })
        .collect();
    assert_eq!(
        gateway_addresses(&gateway.environment()),
        expected,
        "the gateway's {} variables in deploy/compose.yaml name each service's container and port",
        gateway_variable("<name>")
    );
    for name in services.keys() {
        assert_eq!(
            gateway.depends_on().get(served[name.as_str()].name),
            Some(&"service_healthy".to_owned()),
            "the gateway waits for {name} to be ready"
        );
    }

    // The migration runs the same image once the database and the broker answer.
    let migrate = find(&["migrate"]);
    assert_eq!(migrate.len(), 1, "deploy/compose.yaml runs `migrate` once");
    let migrate = migrate[0];
    assert_eq!(migrate.name, "migrate");
    let every_process: Vec<&Container<'_>> =
        served.values().copied().chain([gateway, migrate]).collect();

    // One secret and the same servers for every process, and each server is a compose service.
    let shared = [
        "EMPORIUM_JWT_SECRET",
        "EMPORIUM_DATABASE_URL",
        "EMPORIUM_KAFKA_BROKERS",
        "EMPORIUM_REDIS_URL",
    ];
    let reference = migrate.environment();
    for key in shared {
        let value = reference
            .get(key)
            .unwrap_or_else(|| panic!("`migrate` sets {key}"));
        assert!(!value.is_empty(), "{key} is set");
        for container in &every_process {
            assert_eq!(
                container.environment().get(key),
                Some(value),
                "compose service `{}` shares {key} with the others",
                container.name
            );
        }
    }
    for key in [
        "EMPORIUM_DATABASE_URL",
        "EMPORIUM_KAFKA_BROKERS",
        "EMPORIUM_REDIS_URL",
    ] {
        let host = url_host(&reference[key]);
        assert!(
            names.contains(host),
            "{key} names `{host}`, which is not a service of deploy/compose.yaml"
        );
        let waited_for = migrate.depends_on().contains_key(host)
            || served.values().all(|c| c.depends_on().contains_key(host));
        assert!(waited_for, "the processes wait for `{host}` ({key})");
    }
    assert!(
        reference["EMPORIUM_JWT_SECRET"].contains("${EMPORIUM_JWT_SECRET:?"),
        "the token secret comes from the operator's environment, never a value in the file"
    );

    // Kafka in KRaft mode, advertising the address the processes use.
    let brokers = &reference["EMPORIUM_KAFKA_BROKERS"];
    let kafka = containers
        .iter()
        .find(|c| c.name == url_host(brokers))
        .unwrap();
    assert!(
        kafka.spec["image"]
            .as_str()
            .unwrap_or_default()
            .starts_with("apache/kafka:"),
        "Kafka runs from the apache/kafka image"
    );
    let kafka_env = kafka.environment();
    let roles: BTreeSet<&str> = kafka_env
        .get("KAFKA_PROCESS_ROLES")
        .map(|r| r.split(',').map(str::trim).collect())
        .unwrap_or_default();
    assert_eq!(
        roles,
        BTreeSet::from(["broker", "controller"]),
        "one KRaft node, broker and controller (KAFKA_PROCESS_ROLES)"
    );
    assert!(
        kafka_env
            .get("KAFKA_ADVERTISED_LISTENERS")
            .is_some_and(|l| l.contains(&format!("://{brokers}"))),
        "Kafka advertises {brokers}, where the processes look for it"
    );
    // Comments aside (the parsed file has none).
    let settings = compose.to_string().to_lowercase();
    assert!(
        !settings.contains("zookeeper"),
        "KRaft needs no ZooKeeper: no service or setting of deploy/compose.yaml names one"
    );

    // Files mounted from deploy/ exist.
    for container in &containers {
        for volume in strings(&container.spec["volumes"]) {
            if let Some(source) = volume.strip_prefix("./") {
                let source = source.split(':').next().unwrap();
                assert!(
                    deploy(source).exists(),
                    "compose service `{}` mounts deploy/{source}, which does not exist",
                    container.name
                );
            }
        }
    }
    for observer in ["prometheus", "grafana"] {
        assert!(
            names.contains(observer),
            "deploy/compose.yaml runs {observer}"
        );
    }
}

#[test]
fn prometheus_scrapes_every_process_and_grafana_reads_it() {
    let prometheus = yaml("prometheus.yml");
    let mut targets = BTreeSet::new();
    for job in prometheus["scrape_configs"].as_array().unwrap() {
        let path = job["metrics_path"].as_str().unwrap_or("/metrics");
        assert_eq!(path, METRICS, "job {} scrapes {METRICS}", job["job_name"]);
        for group in job["static_configs"].as_array().unwrap() {
            targets.extend(strings(&group["targets"]));
        }
    }
    let compose = yaml("compose.yaml");
    let processes = compose_addresses(&compose);
    let mut expected: BTreeSet<String> = services().into_keys().collect();
    expected.insert("gateway".to_owned());
    assert_eq!(
        processes.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "deploy/compose.yaml runs every service and the gateway"
    );
    assert_eq!(
        targets,
        processes.into_values().collect(),
        "deploy/prometheus.yml scrapes each process at its container and port in deploy/compose.yaml"
    );

    let datasources = yaml("grafana/provisioning/datasources/prometheus.yml");
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["type"], "prometheus");
    let url = datasource["url"].as_str().unwrap();
    assert!(
        compose["services"].get(url_host(url)).is_some(),
        "Grafana reads Prometheus at {url}"
    );
    let dashboard: Value =
        serde_json::from_str(&read(&deploy("grafana/dashboards/emporium.json"))).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"], datasource["uid"],
            "panel {} reads the provisioned data source",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("emporium_")),
                "panel {} queries Emporium's metrics",
                panel["title"]
            );
        }
    }
}

/// The Kubernetes objects of `deploy/k8s/`, by kind and name.
struct Manifests {
    objects: BTreeMap<(String, String), Value>,
}

impl Manifests {
    fn load() -> Manifests {
        let kustomization = yaml("k8s/kustomization.yaml");
        let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
        let present: BTreeSet<String> = std::fs::read_dir(deploy("k8s"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
            .collect();
        assert_eq!(
            listed, present,
            "deploy/k8s/kustomization.yaml lists every manifest of deploy/k8s/"
        );
        let mut objects = BTreeMap::new();
        for file in &listed {
            for object in yaml_documents(&format!("k8s/{file}")) {
                let kind = text(&object["kind"]);
                let name = text(&object["metadata"]["name"]);
                assert!(
                    !kind.is_empty() && !name.is_empty(),
                    "deploy/k8s/{file}: every object has a kind and a name"
                );
                let previous = objects.insert((kind.clone(), name.clone()), object);
                assert!(previous.is_none(), "{kind} {name} is defined twice");
            }
        }
        Manifests { objects }
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("deploy/k8s/ has no {kind} `{name}`"))
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.objects
            .iter()
            .filter(move |((k, _), _)| k == kind)
            .map(|((_, name), object)| (name.as_str(), object))
    }

    fn config_map(&self) -> BTreeMap<String, String> {
        self.get("ConfigMap", "emporium-config")["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), text(v)))
            .collect()
    }

    /// Checks the Deployment and the Service of one process; `args` is what it runs.
    fn check_process(&self, name: &str, args: &[&str], port: u16) {
        let deployment = self.get("Deployment", name);
        let pod = &deployment["spec"]["template"];
        let containers = pod["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "Deployment {name} runs one container");
        let container = &containers[0];
        assert_eq!(
            strings(&container["args"]),
            args,
            "Deployment {name} runs `emporium {}`",
            args.join(" ")
        );
        let named_ports: BTreeMap<String, u16> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    text(&p["name"]),
                    p["containerPort"].as_u64().unwrap() as u16,
                )
            })
            .collect();
        assert_eq!(
            named_ports.values().copied().collect::<Vec<_>>(),
            vec![port],
            "Deployment {name} exposes port {port}"
        );
        let resolve = |port: &Value| -> u16 {
            match port {
                Value::String(name) => named_ports[name],
                other => other.as_u64().unwrap() as u16,
            }
        };
        let env: BTreeMap<String, String> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (text(&e["name"]), text(&e["value"])))
            .collect();
        assert_eq!(
            env.get("EMPORIUM_LISTEN").map(|l| port_of(l)),
            Some(port),
            "Deployment {name} listens on {port}"
        );
        for (probe, path) in [("readinessProbe", READINESS), ("livenessProbe", LIVENESS)] {
            let get = &container[probe]["httpGet"];
            assert_eq!(
                get["path"].as_str(),
                Some(path),
                "Deployment {name}: {probe} asks {path}"
            );
            assert_eq!(
                resolve(&get["port"]),
                port,
                "Deployment {name}: {probe} asks the container's port"
            );
        }
        let requests = &container["resources"]["requests"];
        assert!(
            requests.get("cpu").is_some() && requests.get("memory").is_some(),
            "Deployment {name} requests CPU (the autoscaler's base) and memory"
        );
        let sources: BTreeSet<(String, String)> = container["envFrom"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|source| {
                source
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(kind, reference)| (kind.clone(), text(&reference["name"])))
            })
            .collect();
        for (reference, kind, object) in [
            ("configMapRef", "ConfigMap", "emporium-config"),
            ("secretRef", "Secret", "emporium-secrets"),
        ] {
            assert!(
                sources.contains(&(reference.to_owned(), object.to_owned())),
                "Deployment {name} reads its settings from {kind} {object}"
            );
            self.get(kind, object);
        }

        let service = self.get("Service", name);
        let labels = pod["metadata"]["labels"].as_object().unwrap();
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(
                labels.get(key),
                Some(value),
                "Service {name} selects the pods of Deployment {name}"
            );
        }
        let service_ports = service["spec"]["ports"].as_array().unwrap();
        assert_eq!(service_ports.len(), 1);
        assert_eq!(
            service_ports[0]["port"].as_u64(),
            Some(u64::from(port)),
            "Service {name} answers on {port}"
        );
        assert_eq!(resolve(&service_ports[0]["targetPort"]), port);
    }
}

#[test]
fn kubernetes_runs_every_service_and_the_gateway_with_probes_and_autoscalers() {
    let manifests = Manifests::load();
    let services = services();
    for (name, port) in &services {
        manifests.check_process(name, &["serve", name], *port);
    }
    manifests.check_process("gateway", &["gateway"], gateway_port());
    let processes: BTreeSet<&str> = manifests.of_kind("Deployment").map(|(n, _)| n).collect();
    let expected: BTreeSet<&str> = services
        .keys()
        .map(String::as_str)
        .chain(["gateway"])
        .collect();
    assert_eq!(
        processes, expected,
        "deploy/k8s/ has one Deployment per service and the gateway"
    );

    // The gateway reaches each service at its Service, on its port.
    let config = manifests.config_map();
    let expected: BTreeMap<String, String> = services
        .iter()
        .map(|(name, port)| (name.clone(), format!("http://{name}:{port}")))
        .collect();
    assert_eq!(
        gateway_addresses(&config),
        expected,
        "the ConfigMap's {} variables name each service's Service and port",
        gateway_variable("<name>")
    );
    for key in ["EMPORIUM_KAFKA_BROKERS", "EMPORIUM_REDIS_URL"] {
        assert!(config.contains_key(key), "the ConfigMap sets {key}");
    }
    let secret = manifests.get("Secret", "emporium-secrets");
    for key in ["EMPORIUM_JWT_SECRET", "EMPORIUM_DATABASE_URL"] {
        assert!(
            secret["stringData"].get(key).is_some(),
            "the Secret holds {key}"
        );
    }

    // Autoscalers: the gateway and the consumers, each on an existing Deployment; a consumer group
    // gives each partition to one member, so more consumers than partitions would sit idle.
    let partitions: u32 = config.get("EMPORIUM_BUS__PARTITIONS").map_or_else(
        || Config::defaults(None).unwrap().bus.partitions,
        |p| p.parse().unwrap(),
    );
    let mut scaled = BTreeSet::new();
    for (name, hpa) in manifests.of_kind("HorizontalPodAutoscaler") {
        let target = &hpa["spec"]["scaleTargetRef"];
        assert_eq!(target["kind"], "Deployment");
        let target = text(&target["name"]);
        manifests.get("Deployment", &target);
        let max = hpa["spec"]["maxReplicas"].as_u64().unwrap();
        if target != "gateway" {
            assert!(
                max <= u64::from(partitions),
                "HorizontalPodAutoscaler {name}: at most {partitions} {target} instances (bus.partitions) get partitions, not {max}"
            );
        }
        assert!(
            manifests.get("Deployment", &target)["spec"]
                .get("replicas")
                .is_none(),
            "Deployment {target} leaves its replica count to its autoscaler"
        );
        scaled.insert(target);
    }
    for name in AUTOSCALED_CONSUMERS.into_iter().chain(["gateway"]) {
        assert!(
            scaled.contains(name),
            "deploy/k8s/ has a HorizontalPodAutoscaler for {name}"
        );
    }
}

/// The Secret's placeholders cannot reach production unnoticed: the token secret as written is
/// refused by the binary's own configuration check.
#[tokio::test]
async fn the_secret_placeholder_stops_start_up() {
    let manifests = Manifests::load();
    let placeholder =
        text(&manifests.get("Secret", "emporium-secrets")["stringData"]["EMPORIUM_JWT_SECRET"]);
    let stderr = refused_start(
        &["serve", "users"],
        &[("EMPORIUM_JWT_SECRET", &placeholder)],
    )
    .await;
    assert!(stderr.contains("jwt_secret"), "{stderr}");
}

/// Runs the binary with `args` and `env` in a fresh data directory, expects it to refuse to start
/// (exit code 1) and returns what it wrote on stderr.
async fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_image_builds_the_binary_and_checks_its_health() {
    let dockerfile = read(&deploy("Dockerfile"));
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        dockerfile.contains("cargo build --release -p emporium --locked"),
        "the image builds the emporium binary from the locked dependencies"
    );
    assert!(
        instructions.contains(&format!("EXPOSE {}", gateway_port()).as_str()),
        "the image exposes the gateway's port"
    );
    assert!(
        dockerfile.contains(&format!("EMPORIUM_LISTEN=0.0.0.0:{}", gateway_port())),
        "the image listens on the gateway's port on every interface"
    );
    assert!(
        instructions.iter().any(|l| l.starts_with("USER ")
            && !l.starts_with("USER root")
            && !l.starts_with("USER 0")),
        "the image runs as a user other than root"
    );
    assert!(
        instructions.contains(&r#"ENTRYPOINT ["emporium"]"#),
        "the compose commands and the Kubernetes args are emporium's arguments"
    );
    assert!(
        dockerfile.contains(&format!(r#"CMD ["emporium-healthcheck", "{READINESS}"]"#)),
        "HEALTHCHECK asks for readiness"
    );
    // Every file copied from the build context exists.
    for line in &instructions {
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        if rest.contains("--from=") {
            continue;
        }
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        for source in &words[..words.len() - 1] {
            assert!(
                source == &"." || repository().join(source).exists(),
                "deploy/Dockerfile copies {source}, which does not exist"
            );
        }
    }
}

/// `deploy/healthcheck` (the image's HEALTHCHECK) against a real process: 200 is healthy, any other
/// answer or none is not.
#[tokio::test]
async fn the_health_check_script_passes_on_200_only() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Platform::start_part(
        dir.path(),
        &["serve", "catalog"],
        &[("EMPORIUM_JWT_SECRET", SECRET)],
    )
    .await;
    let port = port_of(&catalog.base);
    let check = |listen: String, path: &'static str| async move {
        tokio::process::Command::new("bash")
            .arg(deploy("healthcheck"))
            .arg(path)
            .env("EMPORIUM_LISTEN", listen)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .unwrap()
            .success()
    };
    // As in the container: a wildcard listen address is reached on loopback.
    assert!(check(format!("0.0.0.0:{port}"), READINESS).await);
    assert!(check(format!("127.0.0.1:{port}"), LIVENESS).await);
    assert!(
        !check(format!("127.0.0.1:{port}"), "/no-such-path").await,
        "a 404 is not healthy"
    );
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    assert!(
        !check(format!("127.0.0.1:{closed}"), READINESS).await,
        "nothing listening is not healthy"
    );
}
