//! Shared harness for the integration tests: the labs (real name servers,
//! real XMPP servers, a real Tor network), the certwatch binary, and a real
//! third-party XMPP client (slixmpp) driven over JSON lines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The certwatch binary cargo built for these tests.
pub fn certwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_certwatch"))
}

/// Panics unless this process sees only the loopback interface.
///
/// Reads /proc/net/dev, which follows the network namespace (/sys/class/net
/// does not unless sysfs is remounted).
pub fn assert_isolated() {
    let dev = std::fs::read_to_string("/proc/net/dev").expect("read /proc/net/dev");
    let names: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(
        names,
        vec!["lo"],
        "this test starts Tor and must run in a network namespace with only lo: run `bash scripts/test.sh` (or `unshare --net`)"
    );
}

/// A key pair and a self-signed certificate for the test XMPP servers.
pub struct TestCert {
    /// PEM certificate file.
    pub cert: PathBuf,
    /// PEM key file.
    pub key: PathBuf,
    /// SHA-256 of the SPKI, hex.
    pub spki: String,
}

impl TestCert {
    /// Generates a fresh EC key and a certificate for `names` into `dir`.
    pub fn generate(dir: &Path, stem: &str, names: &[&str]) -> TestCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let spki = hex::encode(certwatch::dane::spki_sha256(cert.der()).unwrap());
        TestCert {
            cert: cert_path,
            key: key_path,
            spki,
        }
    }
}

/// Certificate parameters for `names`, valid from 30 days ago until
/// `not_after` (UNIX seconds).
pub fn cert_params_until(names: &[&str], not_after: u64) -> rcgen::CertificateParams {
    use x509_parser::time::ASN1Time;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let at = |secs: u64| ASN1Time::from_timestamp(secs as i64).unwrap().to_datetime();
    params.not_before = at(now - 30 * 86_400);
    params.not_after = at(not_after);
    params
}

impl TestCert {
    /// A self-signed certificate (DER) for this key, for `names`, that
    /// expires at `not_after` (UNIX seconds), and the key (PKCS#8 DER): the
    /// same key (so the same DANE-EE record) in a certificate of chosen life.
    pub fn reissued_until(&self, names: &[&str], not_after: u64) -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&self.key).unwrap()).unwrap();
        let cert = cert_params_until(names, not_after)
            .self_signed(&key)
            .unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }
}

/// A direct-TLS server on 127.0.0.1:`port` that presents `chain` (DER,
/// leaf first) for `key` (PKCS#8 DER), completes each handshake and reads
/// a little: enough for a probe to see the chain. Runs as long as the test.
pub fn tls_server(port: u16, chain: Vec<Vec<u8>>, key: Vec<u8>) {
    use std::sync::Arc;
    let chain = chain.into_iter().map(Into::into).collect();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the TLS server");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(sock) = conn else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                let mut tls =
                    rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), sock);
                let mut buf = [0u8; 256];
                let _ = tls.read(&mut buf);
            });
        }
    });
}

/// Runs `script start ARGS DIR` with `env`, and `script stop ARGS DIR` when dropped.
pub struct Lab {
    script: PathBuf,
    args: Vec<String>,
    /// The lab's working directory.
    pub dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Lab {
    /// Starts a lab; panics with the script's output if it fails.
    pub fn start(script: &str, args: &[&str], dir: &Path, env: &[(&str, String)]) -> Lab {
        std::fs::create_dir_all(dir).unwrap();
        let lab = Lab {
            script: root().join("tests/labs").join(script),
            args: args.iter().map(|s| s.to_string()).collect(),
            dir: dir.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        lab.run("start");
        lab
    }

    /// Runs another verb of the script (e.g. `reload`).
    pub fn run(&self, verb: &str) {
        self.run_with(verb, &[]);
    }

    /// Runs another verb of the script with arguments after the directory
    /// (e.g. `resign DIR shortsig now+2592000`).
    pub fn run_with(&self, verb: &str, extra: &[&str]) {
        let out = Command::new("bash")
            .arg(&self.script)
            .arg(verb)
            .args(&self.args)
            .arg(&self.dir)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run lab script");
        assert!(
            out.status.success(),
            "{} {verb} failed ({}):\n{}\n{}",
            self.script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a verb that takes more arguments after the lab directory
    /// (e.g. `dnslab.sh roll DIR rush both`).
    pub fn run_more(&self, verb: &str, more: &[&str]) {
        let out = Command::new("bash")
            .arg(&self.script)
            .arg(verb)
            .args(&self.args)
            .arg(&self.dir)
            .args(more)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run lab script");
        assert!(
            out.status.success(),
            "{} {verb} {more:?} failed ({}):\n{}\n{}",
            self.script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Reads `KEY=VALUE` lines of a file the lab wrote.
    pub fn env_file(&self, name: &str) -> Vec<(String, String)> {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .args(&self.args)
            .arg(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The slixmpp test client, driven over JSON lines.
pub struct Client {
    child: Proc,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
    /// Events seen while waiting for something else.
    pub backlog: Vec<Value>,
    next_id: u64,
}

impl Client {
    /// Logs in as `jid` on the server at 127.0.0.1:`port`.
    pub fn connect(jid: &str, password: &str, port: u16) -> Client {
        let args = ["--jid", jid, "--password", password, "--host", "127.0.0.1"];
        let port = port.to_string();
        Client::spawn("xmppclient.py", &[&args[..], &["--port", &port]].concat())
            .unwrap_or_else(|| panic!("{jid} did not log in"))
    }

    /// [`Client::connect`] with another driver script of tests/labs
    /// (adhocclient.py adds XEP-0050).
    pub fn connect_script(script: &str, jid: &str, password: &str, port: u16) -> Client {
        let args = ["--jid", jid, "--password", password, "--host", "127.0.0.1"];
        let port = port.to_string();
        Client::spawn(script, &[&args[..], &["--port", &port]].concat())
            .unwrap_or_else(|| panic!("{jid} did not log in"))
    }

    /// Starts another JSON-lines driver of tests/labs (e.g. resources.py);
    /// None unless it says it is ready within 60 s.
    pub fn spawn(script: &str, args: &[&str]) -> Option<Client> {
        let mut child = Command::new("python3")
            .arg(root().join("tests/labs").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn xmppclient.py");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let mut c = Client {
            child: Proc(child),
            stdin,
            lines: rx,
            backlog: Vec::new(),
            next_id: 1,
        };
        c.wait_event(Duration::from_secs(60), |v| v["event"] == "ready")?;
        Some(c)
    }

    /// Waits for an event matching `pred`, from the backlog first.
    pub fn wait_event(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(pos) = self.backlog.iter().position(&pred) {
            return Some(self.backlog.remove(pos));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(v) if pred(&v) => return Some(v),
                Ok(v) => self.backlog.push(v),
                Err(_) => return None,
            }
        }
    }

    /// Sends a command and waits for its reply.
    pub fn cmd(&mut self, command: Value) -> Value {
        self.cmd_within(command, Duration::from_secs(30))
    }

    /// Sends a command and waits at most `timeout` for its reply.
    pub fn cmd_within(&mut self, mut command: Value, timeout: Duration) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.wait_event(timeout, |v| v["id"] == json!(id))
            .unwrap_or_else(|| panic!("no reply to {command}"))
    }

    /// Sends a chat message and returns the body of the next message from `to`.
    pub fn ask(&mut self, to: &str, body: &str, timeout: Duration) -> String {
        let r = self.cmd(json!({"cmd": "send", "to": to, "body": body}));
        assert_eq!(r["ok"], true, "{r}");
        let bare = to.to_owned();
        let reply = self
            .wait_event(timeout, |v| {
                v["event"] == "message"
                    && v["from"]
                        .as_str()
                        .is_some_and(|f| f.split('/').next() == Some(&bare))
            })
            .unwrap_or_else(|| panic!("no reply from {to} to {body:?}"));
        reply["body"].as_str().unwrap_or_default().to_owned()
    }

    /// Asks `body` of `to` no faster than the bot's per-JID command rate
    /// (20 a minute) allows, with room for a few other commands: waits 3.5 s
    /// first. Panics on a rate refusal, so
    /// a test that polls too fast says so instead of timing out in silence.
    pub fn poll(&mut self, to: &str, body: &str, timeout: Duration) -> String {
        std::thread::sleep(Duration::from_millis(3500));
        let reply = self.ask(to, body, timeout);
        assert!(!reply.starts_with("Too many commands"), "{reply}");
        reply
    }

    /// Messages from `from` seen so far or within `timeout`, all of them.
    pub fn drain_messages(&mut self, from: &str, timeout: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = self.wait_event(timeout, |v| {
            v["event"] == "message" && v["from"].as_str().is_some_and(|f| f.starts_with(from))
        }) {
            out.push(v);
        }
        out
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"id": 0, "cmd": "quit"}));
    }
}

/// Polls `f` until it returns Some, or panics after `timeout` naming `what`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `certwatch ARGS check DOMAIN --json` and returns (exit code, JSON).
pub fn check_json(global: &[String], domain: &str, extra: &[&str]) -> (i32, Value) {
    let out = certwatch()
        .args(global)
        .args(["check", domain, "--json"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run certwatch");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "check {domain}: not JSON ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// A free-standing temporary directory kept when the test fails (for logs).
pub fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("certwatch-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Ports of the lab's XMPP endpoints (shared by the DNS and Tor tests).
pub const C2S: u16 = 15222;
pub const C2S_TLS: u16 = 15223;
pub const S2S: u16 = 15269;
pub const S2S_TLS: u16 = 15270;
pub const NOSTARTTLS: u16 = 15998;
pub const DOWN: u16 = 15999;

/// Lab domains Prosody must serve (the probe's stream `to` and SNI).
pub const HOSTS: &str = "good.test wrong.test rollover.test notlsa.test nsec.test nosrv.test dot.test unsigned.test expired.test badsig.test badds.test dsunsigned.test cname.test cnameinsecure.test shared.test nostarttls.test down.test d7.bench.test twozsk.test twoalg.test twoksk.test edit.test bogusdirect.test longcname.test toolongcname.test flip.test chat.aliasfb.test shortsig.test roll.test rush.test";

/// A server that speaks XMPP but offers no STARTTLS (a downgrade in the path).
pub fn no_starttls_server(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the no-STARTTLS server");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' id='x1' version='1.0'>\
                      <stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
                      <mechanism>PLAIN</mechanism></mechanisms></stream:features>",
                );
                let _ = s.read(&mut buf);
            });
        }
    });
}

/// The component JID the lab servers are configured for.
pub const COMPONENT: &str = "certwatch.localhost";

/// Starts `certwatch serve` as a component on 127.0.0.1:`component_port`,
/// with `sections` (TOML for [dns], [probe], [monitor]) and a store in `dir`;
/// its log is appended to `dir`/certwatch.log.
pub fn start_bot(dir: &Path, component_port: u16, sections: &str) -> Proc {
    start_bot_env(dir, component_port, sections, &[])
}

/// [`start_bot`] with extra environment variables.
pub fn start_bot_env(
    dir: &Path,
    component_port: u16,
    sections: &str,
    env: &[(&str, &str)],
) -> Proc {
    let config = dir.join("certwatch.toml");
    let text = format!(
        "[xmpp]\ncomponent = \"{COMPONENT}\"\nserver = \"127.0.0.1:{component_port}\"\nsecret = \"s3cret\"\nadmins = [\"admin@localhost\"]\n\n{sections}\n[store]\npath = \"{}\"\n",
        dir.join("db").display()
    );
    std::fs::write(&config, text).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("certwatch.log"))
        .unwrap();
    Proc(
        certwatch()
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "info,certwatch=debug")
            .envs(env.iter().copied())
            .stderr(log)
            .spawn()
            .expect("start certwatch serve"),
    )
}

/// Waits until the component answers a ping through the server.
pub fn wait_component(client: &mut Client) {
    eventually(Duration::from_secs(40), "the component to answer", || {
        let r = client.cmd(json!({"cmd": "ping", "to": COMPONENT}));
        (r["ok"] == true).then_some(())
    });
}

/// Whether `v` is a chat message from the component whose body contains `needle`.
pub fn is_from_bot(v: &Value, needle: &str) -> bool {
    v["event"] == "message"
        && v["from"].as_str().is_some_and(|f| f.starts_with(COMPONENT))
        && v["body"].as_str().is_some_and(|b| b.contains(needle))
}

/// Counts what `client` gets within `window` that matches (the backlog included).
pub fn count(client: &mut Client, window: Duration, pred: impl Fn(&Value) -> bool) -> usize {
    let mut n = 0;
    while client.wait_event(window, &pred).is_some() {
        n += 1;
    }
    n
}

/// arti's own TOML for the private Tor network `tor` (tests/labs/tornet.sh),
/// with a fresh state and cache directory under `dir`; returns its path.
pub fn arti_config(tor: &Lab, dir: &Path) -> PathBuf {
    let arti = dir.join("arti.toml");
    let base = std::fs::read_to_string(tor.dir.join("arti.toml")).unwrap();
    std::fs::write(
        &arti,
        format!(
            "{base}\n[storage]\nstate_dir = \"{}\"\ncache_dir = \"{}\"\n[storage.permissions]\ndangerously_trust_everyone = true\n",
            dir.join("arti-state").display(),
            dir.join("arti-cache").display()
        ),
    )
    .unwrap();
    arti
}
