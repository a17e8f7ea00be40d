//! A registry the tests control, on 127.0.0.1: plain `std::net` threads, one request
//! per connection, answers chosen per request by a handler. It serves a real image
//! (generated layers) by default; the hostile-registry corpus (tests/tests/registry.rs)
//! bends the answers: redirects, slow or stalled bodies, lying lengths and digests,
//! token endpoints, resets. Every request is logged with its Authorization header, so
//! a test can check where a token went and which paths were asked for.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub authorization: Option<String>,
    /// How many requests for this path (query included) came before this one.
    pub nth: usize,
    /// `GET`, `HEAD`, `POST`, `PATCH`, `PUT`...
    pub method: String,
    /// The body (by its Content-Length, or chunked), for uploads.
    pub body: Vec<u8>,
}

/// What to answer.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The Content-Length to claim (default: the body's length).
    pub content_length: Option<u64>,
    /// Send the body one byte per this interval.
    pub trickle: Option<Duration>,
    /// Send the status line and headers one byte per this interval.
    pub trickle_head: Option<Duration>,
    /// Send the head, then nothing, holding the connection open this long.
    pub stall: Option<Duration>,
    /// Close the connection with a TCP reset instead of answering.
    pub reset: bool,
    /// Send no Content-Length: the body ends when the connection closes.
    pub no_length: bool,
    /// Wait this long before answering (a busy registry).
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status, body: body.into(), ..Reply::default() }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn redirect(location: &str) -> Reply {
        Reply::new(302, "").header("Location", location)
    }
    pub fn reset() -> Reply {
        Reply { reset: true, ..Reply::default() }
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

pub struct Server {
    pub port: u16,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (h, l, s, counts) = (handler.clone(), l.clone(), s.clone(), counts.clone());
                std::thread::spawn(move || serve(conn, &h, &l, &s, &counts));
            }
        });
        Server { port, log, stop, accept: Some(accept) }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

fn serve(
    mut conn: TcpStream,
    handler: &Handler,
    log: &Mutex<Vec<Request>>,
    stop: &AtomicBool,
    counts: &Mutex<HashMap<String, usize>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) if head.len() < 64 << 10 => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let method = first.split(' ').next().unwrap_or("").to_string();
    let path = first.split(' ').nth(1).unwrap_or("").to_string();
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k, v.trim())).collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
    let authorization = header("authorization").map(str::to_string);
    let body = if let Some(n) = header("content-length").and_then(|l| l.parse::<u64>().ok()) {
        let mut b = Vec::new();
        if (&mut conn).take(n.min(256 << 20)).read_to_end(&mut b).is_err() {
            return;
        }
        b
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        match read_chunked(&mut conn) {
            Some(b) => b,
            None => return,
        }
    } else {
        Vec::new()
    };
    let nth = {
        let mut c = counts.lock().unwrap();
        let n = c.entry(path.clone()).or_insert(0);
        *n += 1;
        *n - 1
    };
    let req = Request { path, authorization, nth, method, body };
    log.lock().unwrap().push(req.clone());
    let reply = handler(&req);
    if let Some(d) = reply.delay {
        std::thread::sleep(d);
    }
    if reply.reset {
        // SO_LINGER 0: close() sends RST, as a crashed proxy does.
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        unsafe {
            libc::setsockopt(
                conn.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        return;
    }
    let mut out = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !reply.no_length {
        out.push_str(&format!("Content-Length: {}\r\n", reply.content_length.unwrap_or(reply.body.len() as u64)));
    }
    out.push_str("Connection: close\r\n\r\n");
    let slowly = |conn: &mut TcpStream, data: &[u8], every: Duration| {
        for b in data {
            if stop.load(Ordering::SeqCst) || conn.write_all(&[*b]).is_err() {
                return false;
            }
            std::thread::sleep(every);
        }
        true
    };
    let sent = match reply.trickle_head {
        Some(every) => slowly(&mut conn, out.as_bytes(), every),
        None => conn.write_all(out.as_bytes()).is_ok(),
    };
    if !sent {
        return;
    }
    if let Some(d) = reply.stall {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        return;
    }
    match reply.trickle {
        Some(every) => {
            slowly(&mut conn, &reply.body, every);
        }
        // A client that stops reading (a bound it enforces) makes this fail: fine.
        None => {
            let _ = conn.write_all(&reply.body);
        }
    }
}

/// A `Transfer-Encoding: chunked` body.
fn read_chunked(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            conn.read_exact(&mut byte).ok()?;
            line.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&line);
        let n = usize::from_str_radix(text.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0u8; n + 2];
        conn.read_exact(&mut chunk).ok()?;
        if n == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

pub use driver_core::digest::sha256;

/// An image as a registry holds it: blobs by digest and the manifest.
#[derive(Clone)]
pub struct TestImage {
    pub manifest: Vec<u8>,
    /// The manifest's own media type, sent as its Content-Type.
    pub media_type: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub blobs: HashMap<String, Vec<u8>>,
}

impl TestImage {
    /// `layers` generated layers (gzip) of `seed`, through `write_layout`.
    pub fn generate(seed: u64, layers: usize) -> TestImage {
        TestImage::generate_sized(seed, layers, strata_cli::workload::WorkloadSize::small())
    }

    pub fn generate_sized(seed: u64, layers: usize, size: strata_cli::workload::WorkloadSize) -> TestImage {
        use strata_cli::workload::{generate, gzip};
        let tars: Vec<Vec<u8>> = generate(seed, size).into_iter().take(layers).map(|l| gzip(&l.tar)).collect();
        TestImage::from_layer_blobs(&tars)
    }

    /// An image of these layer blobs (plain, gzip or zstd), through `write_layout`.
    pub fn from_layer_blobs(tars: &[Vec<u8>]) -> TestImage {
        let dir = tempfile::tempdir().expect("tempdir");
        strata_image::image::write_layout(dir.path(), "v1", tars).expect("write_layout");
        let read_json = |p: &std::path::Path| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json")
        };
        let index = read_json(&dir.path().join("index.json"));
        let mut blobs = HashMap::new();
        for e in std::fs::read_dir(dir.path().join("blobs/sha256")).expect("blobs") {
            let e = e.expect("entry");
            let data = std::fs::read(e.path()).expect("blob");
            blobs.insert(format!("sha256:{}", e.file_name().to_string_lossy()), data);
        }
        let mdigest = index["manifests"][0]["digest"].as_str().expect("digest").to_string();
        let manifest = blobs.remove(&mdigest).expect("manifest blob");
        let m: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest json");
        let config_digest = m["config"]["digest"].as_str().expect("config").to_string();
        let layer_digests = m["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().expect("d").to_string())
            .collect();
        let media_type = m["mediaType"].as_str().expect("mediaType").to_string();
        TestImage { manifest, media_type, config_digest, layer_digests, blobs }
    }

    pub fn manifest_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.manifest).expect("manifest json")
    }

    /// Replaces the manifest (the blobs stay).
    pub fn with_manifest(&self, m: &serde_json::Value) -> TestImage {
        TestImage { manifest: serde_json::to_vec(m).expect("json"), ..self.clone() }
    }

    pub fn manifest_digest(&self) -> String {
        sha256(&self.manifest)
    }

    /// The well-behaved answer of a registry holding this image as `repo`.
    pub fn answer(&self, repo: &str, req: &Request) -> Reply {
        let path = req.path.split('?').next().unwrap_or("");
        if path == "/v2/" {
            return Reply::new(200, "{}");
        }
        if let Some(r) = path.strip_prefix(&format!("/v2/{repo}/manifests/")) {
            if r == "v1" || r == self.manifest_digest() {
                return Reply::new(200, self.manifest.clone())
                    .header("Content-Type", &self.media_type)
                    .header("Docker-Content-Digest", &self.manifest_digest());
            }
        }
        if let Some(d) = path.strip_prefix(&format!("/v2/{repo}/blobs/")) {
            if let Some(b) = self.blobs.get(d) {
                return Reply::new(200, b.clone()).header("Content-Type", "application/octet-stream");
            }
        }
        Reply::new(404, r#"{"errors":[{"code":"NOT_FOUND"}]}"#).header("Content-Type", "application/json")
    }
}

/// Debian's `docker-registry` on 127.0.0.1 with filesystem storage in a temp dir,
/// optionally behind htpasswd (Basic) auth; killed on drop.
pub struct DockerRegistry {
    child: std::process::Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DockerRegistry {
    /// `users`: (user, password) pairs for an htpasswd file (bcrypt, made by
    /// `htpasswd -B` from apache2-utils); none: anonymous access.
    pub fn start(users: &[(&str, &str)]) -> DockerRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut auth = String::new();
        if !users.is_empty() {
            let file = dir.path().join("htpasswd");
            for (i, (user, password)) in users.iter().enumerate() {
                let mut cmd = std::process::Command::new("htpasswd");
                // Cost 4, the least bcrypt allows: the registry checks it on every request.
                cmd.arg(if i == 0 { "-Bbc" } else { "-Bb" }).args(["-C", "4"]).arg(&file).args([user, password]);
                let o = cmd.output().expect("htpasswd (Debian package apache2-utils) must be installed");
                assert!(o.status.success(), "htpasswd: {}", String::from_utf8_lossy(&o.stderr));
            }
            auth = format!("auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n", file.display());
        }
        // A free port can be taken by someone else between our probe and the
        // registry's bind: then the registry exits, and another port is tried.
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
            let cfg = dir.path().join("config.yml");
            std::fs::write(
                &cfg,
                format!(
                    "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                    dir.path().join("data").display()
                ),
            )
            .expect("write config");
            let mut child = std::process::Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg)
                .stdout(std::process::Stdio::null())
                // Its access log: what `requests` reads.
                .stderr(std::fs::File::create(dir.path().join("registry.log")).expect("registry log"))
                .spawn()
                .expect("docker-registry (Debian package docker-registry) must be installed");
            // Generous: a loaded CI machine starts it slowly.
            for _ in 0..600 {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return DockerRegistry { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start on 127.0.0.1");
    }

    /// Every request the registry answered so far, from its access log: (method, URI,
    /// status), in order.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        let field = |line: &str, key: &str| -> Option<String> {
            let at = line.find(&format!(" {key}="))? + key.len() + 2;
            let rest = &line[at..];
            Some(match rest.strip_prefix('"') {
                Some(q) => q[..q.find('"')?].to_string(),
                None => rest.split(' ').next()?.to_string(),
            })
        };
        log.lines()
            .filter(|l| l.contains("msg=\"response completed"))
            .filter_map(|l| {
                let status = field(l, "http.response.status")?.parse().ok()?;
                Some((field(l, "http.request.method")?, field(l, "http.request.uri")?, status))
            })
            .collect()
    }

    /// `skopeo copy` of `src` (any skopeo transport) to `127.0.0.1:PORT/name`.
    pub fn skopeo_push(&self, src: &str, name: &str, creds: Option<&str>) {
        let mut cmd = std::process::Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        let o = cmd.arg(src).arg(format!("docker://127.0.0.1:{}/{name}", self.port)).output().expect("skopeo");
        assert!(o.status.success(), "skopeo copy {src}: {}", String::from_utf8_lossy(&o.stderr));
    }
}
