//! XEP-0050 ad-hoc commands on real Prosody and real ejabberd, driven by
//! slixmpp's own XEP-0050 plugin (tests/labs/adhocclient.py): the command
//! list, each command's form, a submitted form's result, `list` as a
//! table, cancel, unknown nodes and sessions, the operator-only commands
//! refused to others and run by an operator, and the chat commands' rate
//! limit shared with the ad-hoc path.

mod common;

use std::time::Duration;

use common::{wait_component, workdir, Client, Lab, COMPONENT};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// Nothing answers DNS on port 9: checks fail fast, on loopback only.
const SECTIONS: &str = "[dns]\nnameservers = [\"127.0.0.1:9\"]\n\n[probe]\ntransport = \"direct\"\ntimeout = \"3s\"\nallow_private = true\n\n[monitor]\ninterval = \"1h\"\njitter = \"0s\"\n";

fn client(jid: &str, port: u16) -> Client {
    let password = format!("{}-pw", jid.split('@').next().unwrap());
    Client::connect_script("adhocclient.py", jid, &password, port)
}

fn nodes(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {list}"))
        .iter()
        .map(|i| i["node"].as_str().unwrap().to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn field<'a>(form: &'a Value, var: &str) -> &'a Value {
    form["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["var"] == var)
        .unwrap_or_else(|| panic!("no field {var}: {form}"))
}

/// The text-multi `result` of a result form, as one string.
fn result_text(r: &Value) -> String {
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["status"], "completed", "{r}");
    field(&r["form"], "result")["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn exec(c: &mut Client, node: &str, values: Option<Value>) -> Value {
    let mut cmd = json!({"cmd": "adhoc_exec", "to": COMPONENT, "node": node});
    if let Some(v) = values {
        cmd["values"] = v;
    }
    c.cmd(cmd)
}

fn adhoc_flow(server: &str, base: u16) {
    let dir = workdir(&format!("adhoc-{server}"));
    let env: Vec<(&str, String)> = [
        ("C2S_PORT", base + 22),
        ("C2S_TLS_PORT", base + 23),
        ("S2S_PORT", base + 69),
        ("S2S_TLS_PORT", base + 70),
        ("COMPONENT_PORT", base + 47),
    ]
    .iter()
    .map(|(k, v)| (*k, v.to_string()))
    .chain([
        ("COMPONENT_JID", COMPONENT.to_string()),
        ("COMPONENT_SECRET", "s3cret".into()),
    ])
    .collect();
    let _lab = Lab::start("xmpplab.sh", &[server], &dir.join("server"), &env);
    let c2s = base + 22;
    let _bot = common::start_bot(&dir, base + 47, SECTIONS);
    let mut alice = client("alice@localhost", c2s);
    wait_component(&mut alice);

    // The component says it does ad-hoc commands, and lists exactly the
    // six of the contract to anyone who is not an operator.
    let info = alice.cmd(json!({"cmd": "disco_info", "to": COMPONENT}));
    assert!(
        info["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "http://jabber.org/protocol/commands"),
        "{server}: {info}"
    );
    let list = alice.cmd(json!({"cmd": "adhoc_commands", "to": COMPONENT}));
    assert_eq!(
        nodes(&list),
        [
            "check",
            "evidence",
            "list",
            "status",
            "subscribe",
            "unsubscribe"
        ],
        "{server}: {list}"
    );

    // subscribe: executing without a form answers the form...
    let form = alice.cmd(json!({"cmd": "adhoc_start", "to": COMPONENT, "node": "subscribe"}));
    assert_eq!(form["status"], "executing", "{server}: {form}");
    let domain = field(&form["form"], "domain");
    assert_eq!(domain["type"], "text-single", "{form}");
    assert_eq!(domain["required"], true, "{form}");
    assert!(form["actions"].to_string().contains("complete"), "{form}");
    // ...and completing it with the form subscribes.
    let sid = form["sessionid"].as_str().unwrap().to_owned();
    // An XMPP address where the domain goes: its domain is used, and the
    // answer says so first.
    let done = alice.cmd(json!({"cmd": "adhoc_complete", "sessionid": sid,
        "values": {"domain": "alice@Example.ORG"}}));
    let text = result_text(&done);
    assert!(
        text.starts_with(
            "Using example.org, the domain of the address \"alice@Example.ORG\".\nSubscribed to example.org"
        ),
        "{server}: {done}"
    );
    assert_eq!(field(&done["form"], "domain")["values"][0], "example.org");
    // The session is over: completing it again is refused as unknown.
    let again = exec(
        &mut alice,
        "subscribe",
        Some(json!({"domain": "example.org"})),
    );
    assert!(
        result_text(&again).contains("already subscribed"),
        "{again}"
    );
    let stale = alice.cmd(
        json!({"cmd": "adhoc_exec", "to": COMPONENT, "node": "subscribe",
        "sessionid": sid, "values": {"domain": "example.org"}}),
    );
    assert_eq!(
        (&stale["error"], &stale["detail"]),
        (&json!("bad-request"), &json!("bad-sessionid")),
        "{server}: {stale}"
    );

    // list: a table with <reported/> and one <item/> per subscription.
    let table = exec(&mut alice, "list", None);
    assert_eq!(table["status"], "completed", "{server}: {table}");
    assert_eq!(
        table["form"]["reported"],
        json!(["domain", "state", "words", "since", "checked", "via"]),
        "{server}: {table}"
    );
    let items = table["form"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{table}");
    assert_eq!(items[0]["domain"], "example.org", "{table}");
    assert_eq!(items[0]["via"], "chat", "{table}");
    // The chat front reads the same subscriptions; a misspelt command
    // gets the likely one.
    let chat = alice.ask(COMPONENT, "list", T);
    assert!(chat.contains("example.org"), "{chat}");
    let typo = alice.ask(COMPONENT, "chek example.org", T);
    assert_eq!(
        typo,
        "Unknown command. Did you mean \"check DOMAIN\"? Send \"help\" for the list of commands.",
        "{server}"
    );
    let status = exec(&mut alice, "status", Some(json!({"domain": "exmaple.org"})));
    assert!(
        result_text(&status)
            .starts_with("No stored result for exmaple.org. Did you mean example.org?"),
        "{server}: {status}"
    );

    // check: a domain field and a service list; a bad domain asks again
    // with an error note; cancel ends the session.
    let form = alice.cmd(json!({"cmd": "adhoc_start", "to": COMPONENT, "node": "check"}));
    let service = field(&form["form"], "service");
    assert_eq!(service["type"], "list-single", "{form}");
    assert_eq!(service["options"], json!(["all", "client", "server"]));
    let sid = form["sessionid"].as_str().unwrap().to_owned();
    let bad = alice.cmd(json!({"cmd": "adhoc_complete", "sessionid": sid,
        "values": {"domain": "not_a_domain"}}));
    assert_eq!(bad["status"], "executing", "{server}: {bad}");
    assert_eq!(bad["notes"][0]["type"], "error", "{bad}");
    assert!(
        bad["notes"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Not a valid domain"),
        "{bad}"
    );
    assert_eq!(field(&bad["form"], "domain")["values"][0], "not_a_domain");
    let sid = bad["sessionid"].as_str().unwrap().to_owned();
    let canceled = alice.cmd(json!({"cmd": "adhoc_cancel", "sessionid": sid}));
    assert_eq!(canceled["status"], "canceled", "{server}: {canceled}");
    let gone = alice.cmd(
        json!({"cmd": "adhoc_exec", "to": COMPONENT, "node": "check",
        "action": "cancel", "sessionid": sid}),
    );
    assert_eq!(gone["detail"], "bad-sessionid", "{server}: {gone}");
    // Executing with the form at once runs it (our DNS fails here, after
    // its 30 s of retries: the result says so, as chat does).
    let checked = alice.cmd_within(
        json!({"cmd": "adhoc_exec", "to": COMPONENT, "node": "check", "timeout": 90,
            "values": {"domain": "example.org", "service": "client"}}),
        Duration::from_secs(100),
    );
    let text = result_text(&checked);
    assert!(text.starts_with("example.org: could not check"), "{text}");
    assert_eq!(
        field(&checked["form"], "verdict")["values"][0],
        "unreachable"
    );

    // status, evidence, unsubscribe.
    let status = exec(&mut alice, "status", Some(json!({"domain": "example.net"})));
    assert!(
        result_text(&status).contains("No stored result for example.net"),
        "{status}"
    );
    let evidence = exec(
        &mut alice,
        "evidence",
        Some(json!({"domain": "example.org"})),
    );
    assert!(
        result_text(&evidence).starts_with("No evidence kept for example.org"),
        "{evidence}"
    );
    let unsub = exec(
        &mut alice,
        "unsubscribe",
        Some(json!({"domain": "example.org"})),
    );
    assert!(
        result_text(&unsub).starts_with("Unsubscribed from example.org"),
        "{unsub}"
    );
    let empty = exec(&mut alice, "list", None);
    assert_eq!(empty["form"]["items"], json!([]), "{empty}");
    assert!(
        empty["notes"][0]["text"]
            .as_str()
            .unwrap()
            .contains("no subscriptions"),
        "{empty}"
    );

    // Unknown nodes (help is a chat command only) are not found; the
    // operators' commands are forbidden to others.
    for node in ["nope", "help"] {
        let r = exec(&mut alice, node, None);
        assert_eq!(r["error"], "item-not-found", "{server}: {node}: {r}");
    }
    for node in ["health", "outbox", "test-alert"] {
        let r = exec(&mut alice, node, None);
        assert_eq!(r["error"], "forbidden", "{server}: {node}: {r}");
    }

    // An operator sees and runs them.
    let mut admin = client("admin@localhost", c2s);
    let list = admin.cmd(json!({"cmd": "adhoc_commands", "to": COMPONENT}));
    let all = nodes(&list);
    for node in ["check", "health", "outbox", "test-alert"] {
        assert!(all.iter().any(|n| n == node), "{server}: {list}");
    }
    let health = exec(&mut admin, "health", None);
    assert_eq!(health["status"], "completed", "{server}: {health}");
    let parts: Vec<String> = health["form"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["part"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        parts[0].starts_with("DNS resolver (127.0.0.1:9)"),
        "{server}: {health}"
    );
    assert_eq!(parts.len(), 4, "direct transport: no Tor row: {health}");
    let outbox = exec(&mut admin, "outbox", None);
    assert!(
        outbox["notes"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Outbox: "),
        "{server}: {outbox}"
    );
    let test = exec(&mut admin, "test-alert", None);
    assert!(
        result_text(&test).starts_with("A test alert to admin@localhost is queued"),
        "{test}"
    );
    let alert = admin
        .wait_event(T, |v| {
            v["event"] == "message"
                && v["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("CertWatch test alert"))
        })
        .unwrap_or_else(|| panic!("{server}: no test alert reached the operator"));
    assert!(
        alert["from"].as_str().unwrap().starts_with(COMPONENT),
        "{alert}"
    );

    // Ad-hoc runs count against the chat commands' rate (20 a minute):
    // the form requests do not, the runs do, and chat sees the same limit.
    let mut bob = client("bob@localhost", c2s);
    // list and unsubscribe see one's PubSub subscriptions too.
    let r = bob.cmd(json!({"cmd": "pubsub_subscribe", "to": COMPONENT, "node": "pubsub.example"}));
    assert_eq!(r["ok"], true, "{server}: {r}");
    let list = bob.ask(COMPONENT, "list", T);
    assert!(
        list.contains("\npubsub.example (PubSub): "),
        "{server}: {list}"
    );
    let table = exec(&mut bob, "list", None);
    assert_eq!(table["form"]["items"][0]["via"], "PubSub", "{table}");
    let unsub = bob.ask(COMPONENT, "unsubscribe pubsub.example", T);
    assert_eq!(
        unsub, "Unsubscribed from pubsub.example (1 PubSub subscription(s)).",
        "{server}"
    );
    let subs = bob.cmd(json!({"cmd": "pubsub_subscriptions", "to": COMPONENT}));
    assert_eq!(subs["subscriptions"], json!([]), "{server}: {subs}");
    // bob has used 3 of his 20 commands this minute.
    let answers: Vec<Value> = (0..18).map(|_| exec(&mut bob, "list", None)).collect();
    assert_eq!(answers[16]["status"], "completed", "{answers:?}");
    assert!(answers[16]["notes"][0]["type"] != "error", "{answers:?}");
    let refused = &answers[17];
    assert_eq!(refused["status"], "completed", "{refused}");
    assert_eq!(refused["notes"][0]["type"], "error", "{refused}");
    assert!(
        refused["notes"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Too many commands"),
        "{server}: {refused}"
    );
    let chat = bob.ask(COMPONENT, "list", T);
    assert!(chat.starts_with("Too many commands"), "{server}: {chat}");
}

#[test]
fn prosody_adhoc_commands() {
    adhoc_flow("prosody", 18200);
}

#[test]
fn ejabberd_adhoc_commands() {
    adhoc_flow("ejabberd", 18300);
}

/// A tmux session running profanity (a real terminal client), read from
/// its screen.
struct Profanity {
    socket: String,
}

impl Profanity {
    fn start(home: &std::path::Path) -> Profanity {
        std::fs::create_dir_all(home).unwrap();
        let socket = format!("certwatch-adhoc-{}", std::process::id());
        let p = Profanity { socket };
        let ok = p
            .tmux(&["new-session", "-d", "-s", "p", "-x", "200", "-y", "80"])
            .env("HOME", home)
            .env_remove("TMUX")
            .arg("profanity")
            .status()
            .expect("tmux (scripts/test.sh installs tmux and profanity)");
        assert!(ok.success(), "tmux did not start profanity");
        p
    }

    fn tmux(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new("tmux");
        c.args(["-L", &self.socket]).args(args);
        c
    }

    /// Types a line and Enter.
    fn type_line(&self, line: &str) {
        let ok = self
            .tmux(&["send-keys", "-t", "p", "-l", line])
            .status()
            .unwrap();
        assert!(ok.success());
        self.tmux(&["send-keys", "-t", "p", "Enter"])
            .status()
            .unwrap();
    }

    fn screen(&self) -> String {
        let out = self
            .tmux(&["capture-pane", "-p", "-t", "p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text`; the screen.
    fn wait_for(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + T;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            if std::time::Instant::now() > deadline {
                panic!("profanity never showed {text:?}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Profanity {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]).status();
    }
}

/// profanity's `/cmd list` and `/cmd exec` (ad-hoc commands in a terminal
/// client): the six commands, the check form with its fields, a status
/// filled in and submitted, a subscription, and `list` showing it.
#[test]
fn prosody_profanity_runs_the_commands() {
    let base = 18400;
    let dir = workdir("adhoc-profanity");
    let env: Vec<(&str, String)> = [
        ("C2S_PORT", base + 22),
        ("C2S_TLS_PORT", base + 23),
        ("S2S_PORT", base + 69),
        ("S2S_TLS_PORT", base + 70),
        ("COMPONENT_PORT", base + 47),
    ]
    .iter()
    .map(|(k, v)| (*k, v.to_string()))
    .chain([
        ("COMPONENT_JID", COMPONENT.to_string()),
        ("COMPONENT_SECRET", "s3cret".into()),
    ])
    .collect();
    let _lab = Lab::start("xmpplab.sh", &["prosody"], &dir.join("server"), &env);
    let _bot = common::start_bot(&dir, base + 47, SECTIONS);
    let mut bob = client("bob@localhost", base + 22);
    wait_component(&mut bob);

    let p = Profanity::start(&dir.join("home"));
    p.wait_for("Profanity");
    p.type_line(&format!(
        "/connect alice@localhost server 127.0.0.1 port {} tls disable",
        base + 22
    ));
    p.wait_for("password");
    p.type_line("alice-pw");
    p.wait_for("logged in successfully");

    p.type_line(&format!("/cmd list {COMPONENT}"));
    p.wait_for("Ad hoc commands:");
    let screen = p.wait_for("  unsubscribe");
    for node in [
        "check",
        "subscribe",
        "unsubscribe",
        "list",
        "status",
        "evidence",
    ] {
        assert!(
            screen
                .lines()
                .any(|l| l.trim_end().ends_with(&format!("  {node}"))),
            "profanity lists no {node}:\n{screen}"
        );
    }
    assert!(!screen.contains("health"), "{screen}");

    p.type_line(&format!("/cmd exec check {COMPONENT}"));
    p.wait_for("Form title: Check a domain now");
    let form = p.wait_for("[server] Servers only (s2s)");
    assert!(form.contains("[field1] Domain"), "{form}");
    assert!(form.contains("(required)"), "{form}");
    assert!(form.contains("[field2] Services to check"), "{form}");
    p.type_line("/form cancel");

    p.type_line(&format!("/cmd exec status {COMPONENT}"));
    p.wait_for("Form title: A domain's last result");
    p.type_line("/field1 example.net");
    p.type_line("/form submit");
    p.wait_for("No stored result for example.net");

    p.type_line(&format!("/cmd exec subscribe {COMPONENT}"));
    p.wait_for("Form title: Subscribe to a domain's alerts");
    p.type_line("/field1 https://example.org/");
    p.type_line("/form submit");
    p.wait_for("Using example.org, the host in \"https://example.org/\".");
    p.wait_for("Subscribed to example.org.");

    p.type_line(&format!("/cmd exec list {COMPONENT}"));
    p.wait_for("Your subscriptions (1):");
    p.wait_for("example.org: not checked yet");
}
