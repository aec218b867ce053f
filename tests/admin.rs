//! What the admin meets at the edges: the command line's errors and exit
//! codes, refused configurations, the log format, Tor failing offline,
//! third-party log noise, and the component's presence and refusals on
//! real Prosody and ejabberd.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{certwatch, eventually, workdir, Client, Lab, Proc, COMPONENT};
use serde_json::json;

fn run(args: &[&str]) -> Output {
    certwatch()
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run certwatch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Lines for a `serve` config whose [xmpp] link goes to a closed port.
fn serve_config(dir: &Path, xmpp: &str, store: &str) -> String {
    write(
        dir,
        "c.toml",
        &format!(
            "[xmpp]\ncomponent = \"certwatch.localhost\"\nserver = \"127.0.0.1:9\"\n{xmpp}\n\n[probe]\ntransport = \"direct\"\n\n[store]\npath = {store:?}\n"
        ),
    )
}

#[test]
fn cli_usage_errors_and_exit_codes() {
    let dir = workdir("admin-cli");
    // The key file given as --cert: the error says to use --key.
    let cert = common::TestCert::generate(&dir, "mixup", &["x.example.org"]);
    let key = cert.key.display().to_string();
    let o = run(&[
        "tlsa",
        "--cert",
        &key,
        "--host",
        "x.example.org",
        "--port",
        "5222",
    ]);
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(stderr(&o).contains("use --key"), "{}", stderr(&o));
    let o = run(&[
        "tlsa",
        "--key",
        "k.pem",
        "--host",
        "x.example.org",
        "--port",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("--port"), "{}", stderr(&o));

    let o = run(&["tlsa", "--host", "x.example.org", "--port", "5222"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).contains("--cert") && stderr(&o).contains("--key"),
        "{}",
        stderr(&o)
    );

    // A bounded read: /dev/zero is refused at once, not read forever.
    let started = Instant::now();
    let o = run(&[
        "tlsa",
        "--cert",
        "/dev/zero",
        "--host",
        "x.example.org",
        "--port",
        "5222",
    ]);
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("a device, not a regular file"),
        "{}",
        stderr(&o)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "tlsa /dev/zero hung"
    );
    let big = write(&dir, "big.pem", &"x".repeat((1 << 20) + 1));
    let o = run(&[
        "tlsa",
        "--cert",
        &big,
        "--host",
        "x.example.org",
        "--port",
        "5222",
    ]);
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    assert!(stderr(&o).contains("larger than 1 MiB"), "{}", stderr(&o));
    let o = run(&[
        "tlsa",
        "--key",
        "/nonexistent.pem",
        "--host",
        "x.example.org",
        "--port",
        "5222",
    ]);
    assert_eq!(o.status.code(), Some(66));

    let o = run(&["check", "a..b"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("\"a..b\""), "{}", stderr(&o));

    let o = run(&["check", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for code in ["0 ", "1 ", "2 ", "3 ", "64 ", "66 ", "78 "] {
        assert!(
            help.contains(&format!("\n  {code}")),
            "check --help lacks {code}:\n{help}"
        );
    }

    // Absurd durations are refused at load time, naming the key.
    for (text, key) in [
        (
            "[probe]\ntimeout = \"400000000000years\"\n",
            "probe.timeout",
        ),
        ("[monitor]\ninterval = \"1000years\"\n", "monitor.interval"),
    ] {
        let c = write(&dir, "d.toml", text);
        let o = run(&["--config", &c, "check", "example.org"]);
        assert_eq!(o.status.code(), Some(78), "{text}: {}", stderr(&o));
        assert!(stderr(&o).contains(key), "{}", stderr(&o));
    }

    // A DS-form trust anchor: a clear error, not "unsupported RecordType".
    let ds = write(
        &dir,
        "root.ds",
        ". 86400 IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n",
    );
    let o = run(&[
        "--trust-anchor",
        &ds,
        "--transport",
        "direct",
        "check",
        "example.org",
    ]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("DNSKEY records"), "{}", stderr(&o));
}

#[test]
fn serve_refuses_unusable_secrets_and_stores() {
    let dir = workdir("admin-serve");
    let store = dir.join("db").display().to_string();
    let empty_secret = format!("secret_file = {:?}", write(&dir, "empty", ""));
    let cases = [
        (empty_secret.as_str(), store.as_str(), "empty"),
        ("secret = \"change-me\"", store.as_str(), "change-me"),
        ("secret = \"s3cret\"", "", "store.path"),
    ];
    for (xmpp, store, says) in cases {
        let c = serve_config(&dir, xmpp, store);
        let o = run(&["--config", &c, "serve"]);
        assert_eq!(
            o.status.code(),
            Some(78),
            "{xmpp} {store:?}: {}",
            stderr(&o)
        );
        assert!(stderr(&o).contains(says), "{xmpp}: {}", stderr(&o));
    }
    assert!(!Path::new("").join("conf").exists());
}

/// Runs certwatch, killing it if it has not ended within `limit` (a FIFO
/// opened for reading with no writer would block for ever).
fn run_within(args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = certwatch()
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run certwatch");
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("certwatch {args:?} still running after {limit:?}: it blocked on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

#[test]
fn files_that_are_fifos_are_refused_at_once() {
    let dir = workdir("admin-fifo");
    let fifo = dir.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let fifo = fifo.display().to_string();
    let store = dir.join("db").display().to_string();
    let with_secret_file = serve_config(&dir, &format!("secret_file = {fifo:?}"), &store);
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["--config", &fifo, "check", "example.org"], 78),
        (vec!["--config", &with_secret_file, "serve"], 78),
        (vec!["--trust-anchor", &fifo, "check", "example.org"], 78),
        (vec!["--arti-config", &fifo, "check", "example.org"], 78),
        (
            vec![
                "tlsa",
                "--cert",
                &fifo,
                "--host",
                "x.example.org",
                "--port",
                "5222",
            ],
            66,
        ),
        (
            vec![
                "tlsa",
                "--key",
                &fifo,
                "--host",
                "x.example.org",
                "--port",
                "5222",
            ],
            66,
        ),
    ];
    for (args, code) in cases {
        let (o, took) = run_within(&args, Duration::from_secs(20));
        println!("{args:?}: exit {:?} in {took:?}", o.status.code());
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("a FIFO (named pipe), not a regular file"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn second_serve_on_a_store_says_another_certwatch_runs() {
    let dir = workdir("admin-store-lock");
    let c = serve_config(
        &dir,
        "secret = \"s3cret\"",
        &dir.join("db").display().to_string(),
    );
    let log = std::fs::File::create(dir.join("first.log")).unwrap();
    let _first = Proc(
        certwatch()
            .args(["--config", &c, "serve"])
            .env_remove("RUST_LOG")
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    eventually(Duration::from_secs(20), "the first serve to start", || {
        let text = std::fs::read_to_string(dir.join("first.log")).unwrap_or_default();
        text.contains("starting").then_some(())
    });
    let o = run(&["--config", &c, "serve"]);
    assert_eq!(o.status.code(), Some(74), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("another certwatch is running"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("WouldBlock"), "{}", stderr(&o));
}

/// Colour codes go to a terminal only, never into a file.
#[test]
fn log_colour_only_on_a_terminal() {
    let dir = workdir("admin-ansi");
    let c = serve_config(
        &dir,
        "secret = \"s3cret\"",
        &dir.join("db").display().to_string(),
    );
    let bin = env!("CARGO_BIN_EXE_certwatch");
    // To a file: plain text.
    let path = dir.join("file.log");
    let mut serve = Proc(
        certwatch()
            .args(["--config", &c, "serve"])
            .env_remove("RUST_LOG")
            .stderr(std::fs::File::create(&path).unwrap())
            .spawn()
            .unwrap(),
    );
    let text = eventually(Duration::from_secs(20), "a log line", || {
        let t = std::fs::read_to_string(&path).unwrap_or_default();
        t.contains("link to the server failed").then_some(t)
    });
    let _ = serve.0.kill();
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text:?}");
    // On a terminal (script(1) gives it a pty): coloured.
    let tty = dir.join("tty.log");
    let _ = Command::new("script")
        .args(["-qefc"])
        .arg(format!("timeout -s INT 4 {bin} --config {c} serve"))
        .arg(&tty)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run script(1)");
    let text = std::fs::read_to_string(&tty).unwrap();
    assert!(text.contains("starting"), "{text}");
    assert!(
        text.contains("\u{1b}["),
        "no colour on a terminal: {text:?}"
    );
}

/// An arti config whose only authority and fallback are a closed local port,
/// with its own state and cache under `dir/name` (arti locks its state
/// directory, so two clients running at once need two).
fn dead_arti(dir: &Path, name: &str) -> String {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    write(
        &dir,
        "dead-arti.toml",
        &format!(
            r#"[tor_network]
fallback_caches = [
  {{ rsa_identity = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ed_identity = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", orports = ["127.0.0.1:9"] }},
]

[tor_network.authorities]
v3idents = ["BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"]
uploads = [["127.0.0.1:9"]]
downloads = [["127.0.0.1:9"]]
votes = [["127.0.0.1:9"]]

[storage]
cache_dir = "{0}/arti-cache"
state_dir = "{0}/arti-state"
"#,
            dir.display()
        ),
    )
}

/// With nothing reachable, `check` gives up on Tor well before its 3 minute
/// bound and says what to try; progress only on a terminal.
#[test]
fn tor_offline_fails_early_with_what_to_try() {
    common::assert_isolated();
    let dir = workdir("admin-offline");
    // Two clients run at once, so each gets its own arti state directory.
    let arti = dead_arti(&dir, "json");
    let arti_tty = dead_arti(&dir, "tty");
    let bin = env!("CARGO_BIN_EXE_certwatch");
    let args = [
        "--arti-config",
        &arti,
        "--nameserver",
        "127.0.0.1:9",
        "check",
        "example.org",
    ];
    let tty = dir.join("tty.log");
    let on_terminal = {
        let cmd = format!("{bin} --arti-config {arti_tty} {}", args[2..].join(" "));
        let tty = tty.clone();
        std::thread::spawn(move || {
            Command::new("script")
                .args(["-qefc", &cmd])
                .arg(&tty)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .output()
                .expect("run script(1)")
        })
    };
    let started = Instant::now();
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let o = run(&json_args);
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let error = report["errors"][0].as_str().unwrap();
    for hint in [
        "cannot bootstrap Tor",
        "network",
        "--transport socks5",
        "--transport direct",
    ] {
        assert!(error.contains(hint), "{hint}: {error}");
    }
    assert!(
        took < Duration::from_secs(150),
        "took {took:?}, the full bound is 3 minutes"
    );
    // Not a terminal: no progress on stderr.
    assert!(!stderr(&o).contains("Tor bootstrap"), "{}", stderr(&o));
    let t = on_terminal.join().unwrap();
    assert_eq!(t.status.code(), Some(3));
    let text = std::fs::read_to_string(&tty).unwrap();
    assert!(text.contains("Tor bootstrap 0%"), "{text:?}");
    assert!(text.contains("--transport direct"), "{text:?}");
    eprintln!("offline check gave up after {took:?}");
}

/// hickory's multi-kilobyte DNSSEC warnings stay off stderr unless asked for.
#[test]
fn third_party_dns_noise_stays_off_stderr() {
    common::assert_isolated();
    let dir = workdir("admin-noise");
    let good = common::TestCert::generate(&dir, "good", &["good.test"]);
    let other = common::TestCert::generate(&dir, "other", &["other.test"]);
    let env: Vec<(&str, String)> = vec![
        ("C2S_PORT", "18422".into()),
        ("C2S_TLS_PORT", "18423".into()),
        ("S2S_PORT", "18469".into()),
        ("S2S_TLS_PORT", "18470".into()),
        ("NOSTARTTLS_PORT", "18498".into()),
        ("DOWN_PORT", "18499".into()),
        ("GOOD_SPKI", good.spki.clone()),
        ("OTHER_SPKI", other.spki.clone()),
        ("DNSLAB_ADDR_BASE", "127.61.0".into()),
        ("BENCH_DOMAINS", "10".into()),
    ];
    let dns = Lab::start("dnslab.sh", &[], &dir.join("dns"), &env);
    let lab = dns.env_file("env");
    let get = |k: &str| lab.iter().find(|(key, _)| key == k).unwrap().1.clone();
    let anchor = get("TRUST_ANCHOR");
    let mut loud = 0;
    let (mut quiet_max, mut noisy_max) = (0, 0);
    for ns in ["AUTH_NS", "RESOLVER_NS", "VALIDATING_NS"] {
        let Some(ns) = lab.iter().find(|(k, _)| k == ns).map(|(_, v)| v.clone()) else {
            continue;
        };
        for domain in [
            "nsec.test",
            "notlsa.test",
            "unsigned.test",
            "expired.test",
            "nosrv.test",
            "cname.test",
        ] {
            let args = [
                "--nameserver",
                &ns,
                "--trust-anchor",
                &anchor,
                "--transport",
                "direct",
                "--allow-private",
                "check",
                domain,
            ];
            let quiet = run(&args);
            let err = stderr(&quiet);
            assert!(
                err.len() < 1024,
                "{domain} via {ns}: {} bytes on stderr:\n{err}",
                err.len()
            );
            let noisy = certwatch()
                .args(args)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            quiet_max = quiet_max.max(err.len());
            noisy_max = noisy_max.max(noisy.stderr.len());
            if noisy.stderr.len() > 2048 && stderr(&noisy).contains("hickory") {
                loud += 1;
            }
        }
    }
    eprintln!(
        "stderr of a lab check: at most {quiet_max} bytes by default, {noisy_max} with RUST_LOG=warn ({loud} loud cases)"
    );
    // The filter has something to filter: hickory does warn on these at `warn`.
    assert!(
        loud > 0,
        "no lab case made hickory warn; the test cannot fail"
    );
}

fn xmpp_lab(server: &str, base: u16) -> (Lab, std::path::PathBuf) {
    let dir = workdir(&format!("admin-{server}"));
    let env: Vec<(&str, String)> = vec![
        ("C2S_PORT", (base + 22).to_string()),
        ("C2S_TLS_PORT", (base + 23).to_string()),
        ("S2S_PORT", (base + 69).to_string()),
        ("S2S_TLS_PORT", (base + 70).to_string()),
        ("COMPONENT_PORT", (base + 47).to_string()),
        ("COMPONENT_JID", COMPONENT.to_string()),
        ("COMPONENT_SECRET", "s3cret".into()),
    ];
    let lab = Lab::start("xmpplab.sh", &[server], &dir.join("server"), &env);
    (lab, dir)
}

/// Starts `serve` with its own [xmpp] lines; the log goes to `dir`/`log`.
fn bot(dir: &Path, log: &str, xmpp: &str) -> Proc {
    let c = write(
        dir,
        &format!("{log}.toml"),
        &format!(
            "[xmpp]\n{xmpp}\n\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n\n[probe]\ntransport = \"direct\"\ntimeout = \"3s\"\n\n[store]\npath = {:?}\n",
            dir.join(format!("{log}.db")).display().to_string()
        ),
    );
    Proc(
        certwatch()
            .args(["--config", &c, "serve"])
            .env_remove("RUST_LOG")
            .stderr(std::fs::File::create(dir.join(log)).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn presence_and_refusals(server: &str, base: u16) {
    let (_lab, dir) = xmpp_lab(server, base);
    let port = base + 47;
    // A wrong name, then a wrong secret: the log says which.
    for (log, xmpp, says) in [
        (
            "wrong-name.log",
            format!("component = \"nope.localhost\"\nserver = \"127.0.0.1:{port}\"\nsecret = \"s3cret\""),
            "xmpp.component",
        ),
        (
            "wrong-secret.log",
            format!("component = \"{COMPONENT}\"\nserver = \"127.0.0.1:{port}\"\nsecret = \"wrong\""),
            "xmpp.secret",
        ),
    ] {
        let _bot = bot(&dir, log, &xmpp);
        let line = eventually(Duration::from_secs(20), "the refusal in the log", || {
            let t = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
            t.lines().find(|l| l.contains("link to the server failed")).map(str::to_owned)
        });
        eprintln!("{server} {log}: {line}");
        assert!(line.contains("stream error"), "{server}: {line}");
        assert!(line.contains(says), "{server}: {line}");
        if server == "prosody" && log == "wrong-name.log" {
            // Prosody names the condition exactly: only the name is suspect.
            assert!(line.contains("host-unknown") && !line.contains("xmpp.secret"), "{line}");
        }
    }

    let xmpp =
        format!("component = \"{COMPONENT}\"\nserver = \"127.0.0.1:{port}\"\nsecret = \"s3cret\"");
    let mut good = bot(&dir, "good.log", &xmpp);
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    common::wait_component(&mut alice);
    let r = alice.cmd(json!({"cmd": "subscribe_presence", "to": COMPONENT}));
    assert_eq!(r["ok"], true);
    let from_bot = |t: &'static str| {
        move |v: &serde_json::Value| {
            v["event"] == "presence"
                && v["type"] == t
                && v["from"].as_str().is_some_and(|f| f.starts_with(COMPONENT))
        }
    };
    let available = alice
        .wait_event(Duration::from_secs(20), from_bot("available"))
        .unwrap_or_else(|| panic!("{server}: no available presence from the bot"));
    let caps = &available["caps"];
    assert_eq!(caps["hash"], "sha-1", "{server}: {available}");
    // The client recomputes ver from node#ver's disco#info (XEP-0115 §5.4).
    let r = alice.cmd(json!({
        "cmd": "verify_caps", "to": COMPONENT, "node": caps["node"], "ver": caps["ver"], "hash": "sha-1"
    }));
    assert_eq!(r["ok"], true, "{server}: {r}");
    assert_eq!(r["computed"], caps["ver"], "{server}: {r}");

    // SIGTERM: the bot says goodbye before it goes.
    let pid = good.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let gone = alice.wait_event(Duration::from_secs(20), from_bot("unavailable"));
    let _ = good.0.wait();
    assert!(
        gone.is_some(),
        "{server}: no unavailable presence on SIGTERM"
    );
    let log = std::fs::read_to_string(dir.join("good.log")).unwrap();
    assert!(
        log.contains("sending unavailable presence jids=1"),
        "{server}: {log}"
    );

    // A restart on the same store: Alice, who never asked again, sees the
    // bot come back (available), and go again on the next SIGTERM.
    let mut again = bot(&dir, "good.log", &xmpp);
    let back = alice.wait_event(Duration::from_secs(40), from_bot("available"));
    assert!(
        back.is_some(),
        "{server}: no available presence after a restart"
    );
    let pid = again.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let gone = alice.wait_event(Duration::from_secs(20), from_bot("unavailable"));
    let _ = again.0.wait();
    assert!(
        gone.is_some(),
        "{server}: no unavailable presence on SIGTERM after a restart"
    );
}

#[test]
fn prosody_presence_caps_and_refusals() {
    presence_and_refusals("prosody", 18600);
}

#[test]
fn ejabberd_presence_caps_and_refusals() {
    presence_and_refusals("ejabberd", 18700);
}
