//! A real Kubernetes control plane for the tests, envtest style: etcd, kube-apiserver and
//! kube-controller-manager (garbage collector and namespace controllers, so owner references and
//! namespace deletion really happen) started as local processes on loopback, with free ports, a
//! self-made service-account key, a static admin token and RBAC authorization.
//!
//! The binaries come from `ci/kube/build.sh`, which builds them from the Go module proxy at the
//! versions pinned in `ci/kube/go.mod` into `~/.cache/ama-migrator/kube-<version>-etcd-<version>/`.
//! `AMA_MIGRATOR_KUBE_BIN` names another directory holding the same three binaries. Without them
//! a test says it is skipped and why; under CI (`CI` set) a missing binary fails the test instead,
//! because `.ci/run` always builds them.
//!
//! Every process is stopped by pid: when the [`ControlPlane`] is dropped, and — for the one
//! shared by a test binary, which a static never drops — by a watchdog shell that kills them once
//! the test process is gone, however it ended.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The admin's bearer token (group `system:masters`).
pub const ADMIN_TOKEN: &str = "ama-migrator-test-admin-token";
/// A token for a user with no role bound (RBAC denies it everything we ask).
pub const NOBODY_TOKEN: &str = "ama-migrator-test-nobody-token";
/// The operator's token: user `ama-migrator-operator`, bound to exactly the rules the chart grants
/// (`ama_migrator::operator::rbac`, with `rbac.secretAccess`), so a request the chart's RBAC
/// would refuse is refused in the tests too.
pub const OPERATOR_TOKEN: &str = "ama-migrator-test-operator-token";
const OPERATOR_USER: &str = "ama-migrator-operator";

/// A running control plane. Dropping it stops every process it started.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub api_port: u16,
    etcd_port: u16,
    etcd_peer_port: u16,
    /// `https://127.0.0.1:<port>`
    pub server: String,
    /// PEM of the CA that signed the API server's serving certificate.
    pub ca_pem: String,
    pub kubeconfig_path: PathBuf,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    controller_manager: Option<Child>,
    /// The API server's `gitVersion`, from `/version`.
    pub version: String,
    /// `Warning` headers the API server sent while the CRDs were applied at start.
    pub crd_warnings: Vec<String>,
}

/// Why no control plane can be started here.
#[derive(Debug)]
pub struct Unavailable(pub String);

/// The directory holding `etcd`, `kube-apiserver` and `kube-controller-manager`, or why not.
pub fn binaries() -> Result<PathBuf, Unavailable> {
    let dir = match std::env::var_os("AMA_MIGRATOR_KUBE_BIN").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let go_mod =
                std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ci/kube/go.mod"))
                    .map_err(|e| Unavailable(format!("ci/kube/go.mod: {e}")))?;
            let version_of = |module: &str| {
                go_mod.lines().find_map(|l| {
                    let mut words = l.split_whitespace();
                    (words.next() == Some(module)).then(|| words.next().map(str::to_owned))?
                })
            };
            let (Some(kube), Some(etcd)) = (
                version_of("k8s.io/kubernetes"),
                version_of("go.etcd.io/etcd/server/v3"),
            ) else {
                return Err(Unavailable(
                    "ci/kube/go.mod does not pin k8s.io/kubernetes and go.etcd.io/etcd/server/v3"
                        .into(),
                ));
            };
            let cache = std::env::var_os("AMA_MIGRATOR_KUBE_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/ama-migrator"))
                })
                .unwrap_or_else(|| PathBuf::from("/tmp/ama-migrator-cache"));
            cache.join(format!("kube-{kube}-etcd-{etcd}"))
        }
    };
    for name in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        if !dir.join(name).is_file() {
            return Err(Unavailable(format!(
                "{} is missing: run `ci/kube/build.sh` (builds the test control plane from the Go \
                 module proxy, ~15 min cold) or set AMA_MIGRATOR_KUBE_BIN",
                dir.join(name).display()
            )));
        }
    }
    Ok(dir)
}

/// The control plane this test binary shares across its tests (each test uses its own
/// namespace), started on first use; `None` (with the reason printed) where the binaries are not
/// built and this is not CI.
pub fn shared() -> Option<&'static ControlPlane> {
    static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| match binaries() {
        Ok(bin) => ControlPlane::start_with(&bin, true).map_err(|e| format!("{e:?}")),
        Err(Unavailable(why)) => Err(why),
    });
    match started {
        Ok(cp) => Some(cp),
        Err(why) => {
            skip_or_fail(why);
            None
        }
    }
}

/// A control plane of the test's own (for tests that stop or restart the API server), or
/// `None` (with the reason printed) where the binaries are not built and this is not CI.
pub fn private() -> Option<ControlPlane> {
    match binaries() {
        Ok(bin) => match ControlPlane::start_with(&bin, false) {
            Ok(cp) => Some(cp),
            Err(e) => panic!("the test control plane did not start: {e:?}"),
        },
        Err(Unavailable(why)) => {
            skip_or_fail(&why);
            None
        }
    }
}

fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI must test against the real API server, but: {why}");
    }
    println!("skipped: no real API server: {why}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl ControlPlane {
    fn start_with(bin: &Path, shared: bool) -> Result<Self, Unavailable> {
        let dir = std::env::temp_dir().join(format!(
            "ama-migrator-kube-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(dir.join("certs"))
            .map_err(|e| Unavailable(format!("{}: {e}", dir.display())))?;
        let sa_key = dir.join("sa.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&sa_key)
            .arg("2048")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| Unavailable(format!("openssl (for the service-account key): {e}")))?;
        if !status.success() {
            return Err(Unavailable("openssl genrsa failed".into()));
        }
        std::fs::write(
            dir.join("tokens.csv"),
            format!(
                "{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n{NOBODY_TOKEN},nobody,nobody-uid\n\
                 {OPERATOR_TOKEN},{OPERATOR_USER},operator-uid\n"
            ),
        )
        .map_err(|e| Unavailable(e.to_string()))?;
        let mut cp = ControlPlane {
            dir,
            bin: bin.to_owned(),
            api_port: free_port(),
            etcd_port: free_port(),
            etcd_peer_port: free_port(),
            server: String::new(),
            ca_pem: String::new(),
            kubeconfig_path: PathBuf::new(),
            etcd: None,
            apiserver: None,
            controller_manager: None,
            version: String::new(),
            crd_warnings: Vec::new(),
        };
        cp.server = format!("https://127.0.0.1:{}", cp.api_port);
        cp.start_etcd()?;
        cp.start_apiserver()?;
        cp.wait_ready(Duration::from_secs(120))?;
        cp.kubeconfig_path = cp.dir.join("kubeconfig");
        std::fs::write(&cp.kubeconfig_path, cp.kubeconfig("default", ADMIN_TOKEN))
            .map_err(|e| Unavailable(e.to_string()))?;
        cp.start_controller_manager()?;
        cp.crd_warnings = cp.install_crds(&["crds"])?;
        cp.bind_operator_rbac()?;
        if shared {
            cp.watch_over_test_process();
        }
        println!(
            "test control plane: kube-apiserver {} at {} (etcd, kube-controller-manager) in {}",
            cp.version,
            cp.server,
            cp.dir.display()
        );
        Ok(cp)
    }

    fn log(&self, name: &str) -> Stdio {
        std::fs::File::create(self.dir.join(format!("{name}.log")))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    }

    fn start_etcd(&mut self) -> Result<(), Unavailable> {
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer = format!("http://127.0.0.1:{}", self.etcd_peer_port);
        let child = Command::new(self.bin.join("etcd"))
            .arg("--data-dir")
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(["--unsafe-no-fsync", "--log-level", "warn"])
            .stdout(self.log("etcd"))
            .stderr(self.log("etcd.err"))
            .spawn()
            .map_err(|e| Unavailable(format!("etcd: {e}")))?;
        self.etcd = Some(child);
        Ok(())
    }

    fn start_apiserver(&mut self) -> Result<(), Unavailable> {
        let child = Command::new(self.bin.join("kube-apiserver"))
            .args([
                "--etcd-servers",
                &format!("http://127.0.0.1:{}", self.etcd_port),
            ])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--secure-port", &self.api_port.to_string()])
            .arg("--cert-dir")
            .arg(self.dir.join("certs"))
            .arg("--token-auth-file")
            .arg(self.dir.join("tokens.csv"))
            .args(["--authorization-mode", "RBAC"])
            .args(["--service-cluster-ip-range", "10.0.0.0/24"])
            .args(["--service-account-issuer", "https://kubernetes.default.svc"])
            .arg("--service-account-key-file")
            .arg(self.dir.join("sa.key"))
            .arg("--service-account-signing-key-file")
            .arg(self.dir.join("sa.key"))
            .args(["--disable-admission-plugins", "ServiceAccount"])
            .args(["--allow-privileged=true", "--v=1"])
            .stdout(self.log("kube-apiserver"))
            .stderr(self.log("kube-apiserver.err"))
            .spawn()
            .map_err(|e| Unavailable(format!("kube-apiserver: {e}")))?;
        self.apiserver = Some(child);
        Ok(())
    }

    fn start_controller_manager(&mut self) -> Result<(), Unavailable> {
        let child = Command::new(self.bin.join("kube-controller-manager"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig_path)
            .args([
                "--controllers=garbage-collector-controller,namespace-controller",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ])
            .args(["--secure-port", &free_port().to_string()])
            .stdout(self.log("kube-controller-manager"))
            .stderr(self.log("kube-controller-manager.err"))
            .spawn()
            .map_err(|e| Unavailable(format!("kube-controller-manager: {e}")))?;
        self.controller_manager = Some(child);
        Ok(())
    }

    /// A shell that outlives nothing: once this test process is gone it stops the processes.
    fn watch_over_test_process(&self) {
        let pids: Vec<String> = [&self.etcd, &self.apiserver, &self.controller_manager]
            .into_iter()
            .flatten()
            .map(|c| c.id().to_string())
            .collect();
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill {pids} 2>/dev/null; \
             sleep 5; kill -9 {pids} 2>/dev/null; rm -rf '{dir}'",
            parent = std::process::id(),
            pids = pids.join(" "),
            dir = self.dir.display()
        );
        let _ = Command::new("setsid")
            .args(["bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// Waits until `/readyz` answers 200 with the admin token, and reads the CA and version.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), Unavailable> {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .apiserver
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(Unavailable(format!(
                    "kube-apiserver exited ({status}); its log: {}",
                    tail(&self.dir.join("kube-apiserver.err.log"))
                )));
            }
            if let Ok(ca) = self.read_ca()
                && self.get("/readyz").is_ok_and(|(code, _)| code == 200)
            {
                self.ca_pem = ca;
                let (_, body) = self.get("/version").map_err(Unavailable)?;
                self.version = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["gitVersion"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(Unavailable(format!(
                    "kube-apiserver not ready after {limit:?}; its log: {}",
                    tail(&self.dir.join("kube-apiserver.err.log"))
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The CA of the serving certificate the API server generated in its cert dir (the file holds
    /// the serving certificate, then the CA that signed it).
    fn read_ca(&self) -> Result<String, String> {
        let pem = std::fs::read_to_string(self.dir.join("certs/apiserver.crt"))
            .map_err(|e| e.to_string())?;
        let blocks: Vec<&str> = pem
            .split_inclusive("-----END CERTIFICATE-----")
            .map(str::trim)
            .filter(|b| b.starts_with("-----BEGIN CERTIFICATE-----"))
            .collect();
        blocks
            .last()
            .map(|b| format!("{b}\n"))
            .ok_or_else(|| "no certificate yet".into())
    }

    /// One blocking GET with the admin token (curl: no TLS stack of the tests' own here).
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "5", "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .arg(format!("{}{path}", self.server))
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').ok_or("no answer")?;
        let code: u16 = code.trim().parse().map_err(|_| "no status".to_string())?;
        Ok((code, body.to_owned()))
    }

    /// Server-side applies every CRD file in `dirs` (relative to the crate), as `kubectl apply
    /// --server-side` would, and waits until each is `Established`. Returns the `Warning` headers
    /// the server answered with; a refusal is an error naming the file and the server's message.
    pub fn install_crds(&self, dirs: &[&str]) -> Result<Vec<String>, Unavailable> {
        let mut warnings = Vec::new();
        let ca = self.dir.join("ca.pem");
        std::fs::write(&ca, &self.ca_pem).map_err(|e| Unavailable(e.to_string()))?;
        for dir in dirs {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| Unavailable(format!("{}: {e}", dir.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect();
            files.sort();
            for file in files {
                let text =
                    std::fs::read_to_string(&file).map_err(|e| Unavailable(e.to_string()))?;
                let crd: serde_json::Value = serde_saphyr::from_str(&text)
                    .map_err(|e| Unavailable(format!("{}: {e}", file.display())))?;
                let name = crd["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                // Headers to a file (for the Warning lines), the body to stdout (for a refusal's
                // message).
                let header_file = self.dir.join("apply-headers.txt");
                let out = Command::new("curl")
                    .args(["-s", "--max-time", "30", "-X", "PATCH"])
                    .arg("-D")
                    .arg(&header_file)
                    .arg("--cacert")
                    .arg(&ca)
                    .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
                    .args(["-H", "Content-Type: application/apply-patch+yaml"])
                    .arg("--data-binary")
                    .arg(format!("@{}", file.display()))
                    .arg(format!(
                        "{}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}?fieldManager=ama-migrator-test&force=true",
                        self.server
                    ))
                    .output()
                    .map_err(|e| Unavailable(format!("curl: {e}")))?;
                let headers = std::fs::read_to_string(&header_file).unwrap_or_default();
                let status_line = headers.lines().next().unwrap_or_default().to_owned();
                warnings.extend(
                    headers
                        .lines()
                        .filter(|l| l.to_ascii_lowercase().starts_with("warning:"))
                        .map(|l| format!("{}: {}", file.display(), l.trim())),
                );
                if !status_line.contains(" 200") && !status_line.contains(" 201") {
                    return Err(Unavailable(format!(
                        "the API server refused {} ({status_line}): {}",
                        file.display(),
                        String::from_utf8_lossy(&out.stdout)
                    )));
                }
                let start = Instant::now();
                loop {
                    let (_, body) = self
                        .get(&format!(
                            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                        ))
                        .map_err(Unavailable)?;
                    let crd: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let established = crd["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    });
                    if established {
                        break;
                    }
                    if start.elapsed() > Duration::from_secs(30) {
                        return Err(Unavailable(format!(
                            "CRD {name} not Established after 30 s"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Ok(warnings)
    }

    /// The chart's RBAC for the operator user: one ClusterRole with every required and optional
    /// rule (the tests' Leases live in their own namespaces, so the Lease rule is cluster-wide
    /// here) and its binding.
    fn bind_operator_rbac(&self) -> Result<(), Unavailable> {
        use ama_migrator::operator::rbac::{OPTIONAL_RULES, REQUIRED_RULES};
        let rules: Vec<serde_json::Value> = REQUIRED_RULES
            .iter()
            .chain(OPTIONAL_RULES.iter().map(|o| &o.rule))
            .map(|r| {
                serde_json::json!({"apiGroups": [r.api_group], "resources": [r.resource], "verbs": r.verbs})
            })
            .collect();
        let admin = Cluster {
            server: self.server.clone(),
            ca_file: self.dir.join("ca.pem"),
            namespace: String::new(),
        };
        let role = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "ama-migrator-test-operator"}, "rules": rules,
        });
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "ama-migrator-test-operator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ama-migrator-test-operator"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}],
        });
        for (path, body) in [
            ("/apis/rbac.authorization.k8s.io/v1/clusterroles", role),
            (
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                binding,
            ),
        ] {
            let (code, answer) = admin.send("POST", path, "application/json", Some(&body));
            if code != 201 && code != 409 {
                return Err(Unavailable(format!("{path}: {code} {answer}")));
            }
        }
        Ok(())
    }

    /// A kubeconfig for `token` with `namespace` as its default.
    pub fn kubeconfig(&self, namespace: &str, token: &str) -> String {
        use std::fmt::Write;
        let ca = base64(self.ca_pem.as_bytes());
        let mut s = String::new();
        let _ = write!(
            s,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: test\n  user:\n    token: {token}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: {namespace}\n\
             current-context: test\n",
            self.server
        );
        s
    }

    /// A client as the admin with `namespace` as its default.
    pub async fn client(&self, namespace: &str) -> kube::Client {
        self.client_as(namespace, ADMIN_TOKEN).await
    }

    pub async fn client_as(&self, namespace: &str, token: &str) -> kube::Client {
        let kubeconfig: kube::config::Kubeconfig =
            serde_saphyr::from_str(&self.kubeconfig(namespace, token)).expect("kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kubeconfig loads");
        kube::Client::try_from(config).expect("client builds")
    }

    /// Stops the API server (etcd and the data stay), as an outage would.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the API server again on the same port and data, and waits until it is ready.
    pub fn restart_apiserver(&mut self) {
        self.stop_apiserver();
        self.start_apiserver().expect("kube-apiserver restarts");
        self.wait_ready(Duration::from_secs(120))
            .expect("kube-apiserver ready again");
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in [
            self.controller_manager.take(),
            self.apiserver.take(),
            self.etcd.take(),
        ]
        .into_iter()
        .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One test's view of a control plane: its namespace, and blocking reads and writes (through
/// curl, so test predicates stay plain closures) of the objects there.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub server: String,
    pub ca_file: PathBuf,
    pub namespace: String,
}

impl Cluster {
    /// A kube client as `token`'s user, with this namespace as its default.
    pub async fn client_as(&self, token: &str) -> kube::Client {
        let ca = std::fs::read(&self.ca_file).expect("the CA file");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {}\nusers:\n- name: test\n  user:\n    token: {token}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: {}\n\
             current-context: test\n",
            self.server,
            base64(&ca),
            self.namespace
        );
        let kubeconfig: kube::config::Kubeconfig =
            serde_saphyr::from_str(&text).expect("kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kubeconfig loads");
        kube::Client::try_from(config).expect("client builds")
    }

    /// The operator's client: the chart's RBAC, nothing more.
    pub async fn operator_client(&self) -> kube::Client {
        self.client_as(OPERATOR_TOKEN).await
    }

    /// A person's client (cluster admin).
    pub async fn admin_client(&self) -> kube::Client {
        self.client_as(ADMIN_TOKEN).await
    }
}

impl ControlPlane {
    /// A fresh namespace `name` on this control plane (created, CRDs already installed).
    pub fn cluster(&self, namespace: &str) -> Cluster {
        let cluster = Cluster {
            server: self.server.clone(),
            ca_file: self.dir.join("ca.pem"),
            namespace: namespace.to_owned(),
        };
        let _ = std::fs::write(&cluster.ca_file, &self.ca_pem);
        let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        // A server under load may answer 429/5xx or time out for a moment: a few tries, bounded.
        let mut tries = 0;
        let (code, answer) = loop {
            let (code, answer) = cluster.send(
                "POST",
                "/api/v1/namespaces",
                "application/json",
                Some(&body),
            );
            tries += 1;
            let transient = code == 0 || code == 429 || code >= 500;
            if !transient || tries == 5 {
                break (code, answer);
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        assert!(
            code == 201 || code == 409,
            "creating namespace {namespace} ({tries} tries): {code} {answer}"
        );
        cluster
    }
}

impl Cluster {
    /// One request as the admin; the status code and the body as JSON (`Value::Null` if none).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .arg("--cacert")
        .arg(&self.ca_file)
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["-H", &format!("Content-Type: {content_type}")]);
        if let Some(body) = body {
            cmd.args(["--data-binary", &body.to_string()]);
        }
        let out = cmd
            .arg(format!("{}{path}", self.server))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let Some((body, code)) = text.rsplit_once('\n') else {
            return (
                0,
                serde_json::Value::from(format!(
                    "curl failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )),
            );
        };
        let code = code.trim().parse().unwrap_or(0);
        // A body that is not JSON (a proxy's or a timeout's text) is kept as a string.
        let body =
            serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::from(body.to_owned()));
        (code, body)
    }

    /// `/apis/g/v/plural` (or `/api/v1/plural`) in this cluster's namespace.
    fn namespaced(&self, collection: &str) -> String {
        let (prefix, plural) = collection.rsplit_once('/').expect("a collection path");
        format!("{prefix}/namespaces/{}/{plural}", self.namespace)
    }

    /// Every object of a collection such as `/apis/amamigrator.io/v1alpha1/machinemigrations`
    /// in this namespace.
    pub fn objects(&self, collection: &str) -> Vec<serde_json::Value> {
        let (code, list) = self.send(
            "GET",
            &self.namespaced(collection),
            "application/json",
            None,
        );
        if code != 200 {
            return Vec::new();
        }
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// One object of this namespace, or `None` when it does not exist.
    /// The object, or `None` when the server says it does not exist (404). A transient answer
    /// (no answer, 429, 5xx — an API server under load) is asked again, up to 8 times, so a busy
    /// machine does not read as a deleted object.
    pub fn object(&self, collection: &str, name: &str) -> Option<serde_json::Value> {
        let path = format!("{}/{name}", self.namespaced(collection));
        let mut last = (0, serde_json::Value::Null);
        for attempt in 0..8u64 {
            let (code, obj) = self.send("GET", &path, "application/json", None);
            match code {
                200 => return Some(obj),
                404 => return None,
                _ => {
                    last = (code, obj);
                    std::thread::sleep(std::time::Duration::from_millis(250 * (attempt + 1)));
                }
            }
        }
        eprintln!(
            "GET {path}: no answer but {} after 8 tries: {}",
            last.0, last.1
        );
        None
    }

    /// Creates an object as `kubectl create` does; a `status` it carries is then written through
    /// the status subresource (a real server drops it on create).
    pub fn create(&self, collection: &str, mut obj: serde_json::Value) -> serde_json::Value {
        obj["metadata"]["namespace"] = serde_json::Value::from(self.namespace.clone());
        let status = obj.as_object_mut().and_then(|o| o.remove("status"));
        let path = self.namespaced(collection);
        let (code, created) = self.send("POST", &path, "application/json", Some(&obj));
        assert_eq!(code, 201, "creating in {path}: {created}");
        let Some(status) = status else {
            return created;
        };
        let name = created["metadata"]["name"].as_str().unwrap_or_default();
        let (code, updated) = self.send(
            "PATCH",
            &format!("{path}/{name}/status"),
            "application/merge-patch+json",
            Some(&serde_json::json!({ "status": status })),
        );
        assert_eq!(code, 200, "writing the status of {name}: {updated}");
        updated
    }
}
