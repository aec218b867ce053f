//! The command line (docs/cli.md): `check`, `tlsa`, `serve`, global
//! overrides, and exit codes.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::check::Checker;
use crate::clock::{self, SharedClock};
use crate::config::{read_bounded, Config, ConfigError, Transport, INPUT_LIMIT};
use crate::dane;
use crate::dns::discovery::tlsa_name;
use crate::domain::Domain;
use crate::error::{ErrorKind, HasKind};
use crate::report::{Report, Verdict};
use crate::setup;
use crate::vocab::ServiceSet;

/// Exit status for a usage error (sysexits EX_USAGE).
pub const EXIT_USAGE: i32 = 64;
/// Exit status when `tlsa`'s file holds no usable certificate or key (sysexits EX_DATAERR).
pub const EXIT_DATAERR: i32 = 65;
/// Exit status when an input file cannot be read (sysexits EX_NOINPUT).
pub const EXIT_NOINPUT: i32 = 66;
/// Exit status for a configuration error (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// Exit status when the check could not run: could not check.
pub const EXIT_UNAVAILABLE: i32 = 3;
/// Exit status when the store cannot be opened or is in use (sysexits EX_IOERR).
pub const EXIT_IOERR: i32 = 74;
/// Exit status when the runtime cannot start (sysexits EX_OSERR).
pub const EXIT_OSERR: i32 = 71;

/// Every exit status, as `--help` and docs/cli.md list them.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0   ok: DNSSEC secure, TLSA records for every endpoint, every key seen matches
  1   alarm: a key matching none of its TLSA records, bogus DNSSEC, or STARTTLS
      missing where TLSA requires TLS
  2   not set up: zone not signed or no usable TLSA records (the report says what to add)
  3   could not check: no endpoint reachable, or our resolver or Tor unavailable
  64  usage error (bad arguments or domain)
  65  tlsa: the file holds no usable certificate or key
  66  an input file cannot be read (or is not a regular file)
  70  serve: stopped by its watchdog (store or runtime stuck for store.watchdog,
      or still running 5 s after SIGTERM)
  71  the runtime cannot start
  74  serve: the store cannot be opened, or another certwatch is using it
  78  configuration error
Details: docs/cli.md";

/// The exit statuses of `tlsa`.
pub const TLSA_EXIT_CODES_HELP: &str = "\
Exit status:
  0   the record was printed
  64  usage error (bad arguments, --port 0, a bad --host)
  65  the file holds no usable certificate or key
  66  the file cannot be read (or is larger than 1 MiB)
Details: docs/cli.md";

/// The heading the overrides are listed under in every `--help`.
const OVERRIDES_HEADING: &str = "Options for check and serve (before or after the command)";

/// CertWatch: catch machine-in-the-middle attacks on XMPP servers with DANE, probing over Tor.
#[derive(Parser, Debug)]
#[command(name = "certwatch", version, about, long_about = None, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The configuration file (TOML, see docs/config.md).
    #[arg(long, global = true, value_name = "FILE", help_heading = OVERRIDES_HEADING)]
    pub config: Option<PathBuf>,
    /// Settings that override the configuration file.
    #[command(flatten, next_help_heading = OVERRIDES_HEADING)]
    pub overrides: Overrides,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Global overrides, each also settable in the config file.
#[derive(Args, Debug, Default, Clone)]
pub struct Overrides {
    /// Ask these DNS servers (IP:PORT) instead of the system's (repeatable).
    #[arg(long, global = true, value_name = "IP:PORT")]
    pub nameserver: Vec<String>,
    /// DNSKEY records to trust instead of the built-in IANA root keys (DS records are refused).
    #[arg(long, global = true, value_name = "FILE")]
    pub trust_anchor: Option<PathBuf>,
    /// How probes travel: tor, socks5 or direct.
    #[arg(long, global = true, value_name = "tor|socks5|direct")]
    pub transport: Option<Transport>,
    /// The SOCKS5 proxy for --transport socks5.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub socks5: Option<String>,
    /// An arti configuration file merged over the defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub arti_config: Option<PathBuf>,
    /// Also probe addresses that are not globally reachable (loopback, RFC 1918,
    /// link-local, ULA, ...): for labs and private deployments.
    #[arg(long, global = true)]
    pub allow_private: bool,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// One-shot check of a domain, then exit (0 ok, 1 alarm, 2 not set up, 3 could not check).
    #[command(after_help = EXIT_CODES_HELP)]
    Check {
        /// The XMPP domain.
        domain: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Which services to check.
        #[arg(long, value_enum, default_value_t = ServiceSet::All)]
        service: ServiceSet,
    },
    /// Print the TLSA records to publish, from your own certificate or key file.
    ///
    /// Give exactly one of --cert or --key. The options for check and serve
    /// are accepted but have no effect here.
    #[command(
        group(ArgGroup::new("source").required(true).args(["cert", "key"])),
        after_help = TLSA_EXIT_CODES_HELP
    )]
    Tlsa {
        /// A PEM certificate (the first one is the leaf, as in fullchain.pem).
        #[arg(long, value_name = "PEM")]
        cert: Option<PathBuf>,
        /// A PEM private key (PKCS#8, SEC1 or PKCS#1).
        #[arg(long, value_name = "PEM")]
        key: Option<PathBuf>,
        /// The SRV target host.
        #[arg(long)]
        host: String,
        /// The SRV port (1-65535).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
    },
    /// Run the XMPP component and, with [web], the web front (docs/chat.md, docs/web.md).
    #[command(after_help = EXIT_CODES_HELP)]
    Serve,
    /// Run a probe-only agent for a coordinator ([agent], docs/agents.md).
    Agent,
}

/// Parses the arguments, runs the command and returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    if let Command::Tlsa {
        cert,
        key,
        host,
        port,
    } = &cli.command
    {
        // No config, no network: only the given file.
        return run_tlsa(cert.as_deref(), key.as_deref(), host, *port);
    }
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("certwatch: {e}");
            return EXIT_CONFIG;
        }
    };
    init_logging(matches!(cli.command, Command::Serve | Command::Agent));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certwatch: cannot start the runtime: {e}");
            return EXIT_OSERR;
        }
    };
    match cli.command {
        Command::Check {
            domain,
            json,
            service,
        } => runtime.block_on(run_check(&config, &domain, json, service)),
        Command::Tlsa { .. } => unreachable!("handled above"),
        Command::Agent => match runtime.block_on(crate::agent::run(config)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("certwatch: {e}");
                EXIT_CONFIG
            }
        },
        Command::Serve => match runtime.block_on(crate::serve::serve(config)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("certwatch: {e}");
                match e.kind() {
                    ErrorKind::Store => EXIT_IOERR,
                    ErrorKind::Bug => crate::watchdog::EXIT_STALLED,
                    _ => EXIT_CONFIG,
                }
            }
        },
    }
}

/// The log filter unless `RUST_LOG` is set. Third-party crates speak only
/// when it is an error: hickory's DNSSEC warnings are multi-kilobyte dumps
/// of a finding the report already states in one line, and arti's are
/// retries it handles itself.
pub fn default_log_filter(serving: bool) -> &'static str {
    if serving {
        "info,arti_client=warn,tor_circmgr=error,tor_guardmgr=error,tor_dirmgr=error,tor_chanmgr=error,tor_proto=error,hickory=error,sled=warn"
    } else {
        "warn,tor_guardmgr=error,tor_dirmgr=error,tor_circmgr=error,tor_chanmgr=error,tor_proto=error,hickory=error"
    }
}

fn init_logging(serving: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log_filter(serving)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or journald.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The config file (if any) with the command-line overrides applied, validated.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let o = &cli.overrides;
    if !o.nameserver.is_empty() {
        config.dns.nameservers = o.nameserver.clone();
    }
    if let Some(t) = &o.trust_anchor {
        config.dns.trust_anchor = t.display().to_string();
    }
    if let Some(t) = o.transport {
        config.probe.transport = t;
    }
    if let Some(s) = &o.socks5 {
        config.probe.socks5 = s.clone();
    }
    if let Some(a) = &o.arti_config {
        config.probe.arti_config = a.display().to_string();
    }
    if o.allow_private {
        config.probe.allow_private = true;
    }
    config.validate()?;
    Ok(config)
}

async fn run_check(config: &Config, input: &str, json: bool, service: ServiceSet) -> i32 {
    let domain = match Domain::parse(input) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("certwatch: {e}");
            return EXIT_USAGE;
        }
    };
    let clock = clock::system();
    let resolver = match setup::resolver(config, &clock) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("certwatch: {e}");
            return EXIT_CONFIG;
        }
    };
    let profiles = match setup::profiles(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("certwatch: {e}");
            return EXIT_CONFIG;
        }
    };
    // A person at a terminal sees Tor's bootstrap; scripts and --json see nothing.
    let progress = (!json && std::io::stderr().is_terminal()).then(|| {
        Box::new(|line: &str| {
            eprint!("\r\x1b[Kcertwatch: Tor bootstrap {line}");
        }) as crate::probe::transport::ProgressFn
    });
    let showing = progress.is_some() && config.probe.transport == Transport::Tor;
    let started = setup::connector_with_progress(config, None, progress).await;
    if showing {
        eprint!("\r\x1b[K");
    }
    let connector = match started {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::Config => {
            eprintln!("certwatch: {e}");
            return EXIT_CONFIG;
        }
        Err(e) => {
            let report = unavailable(&domain, config.probe.transport, e.to_string(), &clock);
            print_report(&report, json);
            return report.verdict.exit_code();
        }
    };
    let mut checker = Checker::new(resolver, setup::prober(config, connector, profiles), clock);
    checker.allow_private = config.probe.allow_private;
    let (report, _health) = checker.check(&domain, service).await;
    print_report(&report, json);
    report.verdict.exit_code()
}

/// A report for a check that could not start (Tor or resolver unavailable).
pub fn unavailable(
    domain: &Domain,
    transport: Transport,
    error: String,
    clock: &SharedClock,
) -> Report {
    Report {
        domain: domain.to_string(),
        checked_at: clock.now_rfc3339(),
        verdict: Verdict::Unreachable,
        endpoints: vec![],
        records_to_add: vec![],
        advice: vec![],
        transport: transport.to_string(),
        errors: vec![error],
        bogus_rrsets: vec![],
        evidence: vec![],
        nxdomain: false,
        resolvers: vec![],
        horizons: Default::default(),
        rollover: vec![],
    }
}

fn print_report(report: &Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("report serialises")
        );
    } else {
        print!("{}", report.to_text());
    }
}

fn run_tlsa(cert: Option<&Path>, key: Option<&Path>, host: &str, port: u16) -> i32 {
    let host = match Domain::parse(host) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("certwatch: --host: {e}");
            return EXIT_USAGE;
        }
    };
    let (path, is_cert) = match (cert, key) {
        (Some(c), _) => (c, true),
        (None, Some(k)) => (k, false),
        (None, None) => {
            eprintln!("certwatch: tlsa needs --cert or --key");
            return EXIT_USAGE;
        }
    };
    let pem = match read_bounded(path, INPUT_LIMIT) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("certwatch: cannot read {}: {e}", path.display());
            return EXIT_NOINPUT;
        }
    };
    let spki = if is_cert {
        dane::spki_from_cert_pem(&pem).map(|(spki, _)| spki)
    } else {
        dane::spki_from_key_pem(&pem)
    };
    let spki = match spki {
        Ok(s) => s,
        Err(e) => {
            eprintln!("certwatch: {}: {e}", path.display());
            return EXIT_DATAERR;
        }
    };
    let owner = tlsa_name(port, host.as_str());
    println!(
        "{}",
        crate::advice::zone_line(
            &owner,
            &format!(
                "3 1 1 {}",
                hex::encode(dane::association_from_spki(&spki, 1))
            )
        )
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn contract_cli_parses() {
        let cli = Cli::try_parse_from([
            "certwatch",
            "--nameserver",
            "127.0.0.1:53",
            "--nameserver",
            "127.0.0.2:53",
            "--transport",
            "direct",
            "check",
            "example.org",
            "--json",
            "--service",
            "client",
        ])
        .unwrap();
        assert_eq!(cli.overrides.nameserver.len(), 2);
        assert_eq!(cli.overrides.transport, Some(Transport::Direct));
        assert!(matches!(
            cli.command,
            Command::Check {
                json: true,
                service: ServiceSet::Client,
                ..
            }
        ));
        // Global options may also follow the subcommand.
        let cli = Cli::try_parse_from(["certwatch", "serve", "--config", "x.toml"]).unwrap();
        assert_eq!(cli.config.as_deref(), Some(Path::new("x.toml")));
    }

    /// The shipped docs, help texts and examples stand on their own.
    #[test]
    fn no_shipped_text_refers_to_the_contract() {
        fn walk(path: &Path, out: &mut Vec<PathBuf>) {
            if path.is_dir() {
                for entry in std::fs::read_dir(path).unwrap() {
                    walk(&entry.unwrap().path(), out);
                }
            } else {
                out.push(path.to_owned());
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("README.md"), root.join("certwatch.example.toml")];
        for dir in ["docs", "src", "prosody-example", "ejabberd-example"] {
            walk(&root.join(dir), &mut files);
        }
        assert!(files.len() > 20, "{files:?}");
        let word = ["CONTR", "ACT"].concat();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(!text.contains(&word), "{} mentions {word}", f.display());
        }
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains(&word));
    }

    #[test]
    fn help_lists_every_exit_code() {
        let mut cli = Cli::command();
        let check = cli.find_subcommand_mut("check").unwrap();
        let help = check.render_long_help().to_string();
        for code in ["0 ", "1 ", "2 ", "3 ", "64 ", "66 ", "78 "] {
            assert!(
                help.contains(&format!("\n  {code}")),
                "check --help lacks {code}: {help}"
            );
        }
        let docs = include_str!("../docs/cli.md");
        for code in ["0", "1", "2", "3", "64", "65", "66", "71", "74", "78"] {
            assert!(
                docs.contains(&format!("\n| {code} |")),
                "docs/cli.md lacks {code}"
            );
        }
    }

    #[test]
    fn tlsa_port_zero_is_a_usage_error() {
        let err = Cli::try_parse_from([
            "certwatch",
            "tlsa",
            "--key",
            "k.pem",
            "--host",
            "x.example.org",
            "--port",
            "0",
        ])
        .unwrap_err();
        assert!(err.use_stderr());
        assert!(err.to_string().contains("--port"), "{err}");
        let err = Cli::try_parse_from([
            "certwatch",
            "tlsa",
            "--host",
            "x.example.org",
            "--port",
            "5222",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--cert") && err.contains("--key"), "{err}");
    }

    #[test]
    fn tlsa_help_keeps_its_own_options_apart() {
        let mut cli = Cli::command();
        cli.build();
        let tlsa = cli.find_subcommand_mut("tlsa").unwrap();
        let help = tlsa.render_long_help().to_string();
        let own = help.find("--cert").unwrap();
        let heading = help.find(OVERRIDES_HEADING).expect("the heading");
        let nameserver = help.find("--nameserver").unwrap();
        assert!(own < heading && heading < nameserver, "{help}");
    }

    #[test]
    fn tlsa_needs_exactly_one_source() {
        let base = [
            "certwatch",
            "tlsa",
            "--host",
            "x.example.org",
            "--port",
            "5222",
        ];
        assert!(Cli::try_parse_from(base).is_err());
        let mut both = base.to_vec();
        both.extend(["--cert", "a.pem", "--key", "b.pem"]);
        assert!(Cli::try_parse_from(both).is_err());
        let mut one = base.to_vec();
        one.extend(["--key", "b.pem"]);
        assert!(Cli::try_parse_from(one).is_ok());
    }

    #[test]
    fn overrides_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[probe]\ntransport = \"tor\"\n").unwrap();
        let cli = Cli::try_parse_from([
            "certwatch",
            "--config",
            path.to_str().unwrap(),
            "--transport",
            "socks5",
            "--socks5",
            "127.0.0.1:9150",
            "serve",
        ])
        .unwrap();
        let c = load_config(&cli).unwrap();
        assert_eq!(c.probe.transport, Transport::Socks5);
        assert_eq!(c.probe.socks5, "127.0.0.1:9150");
        assert!(!c.probe.allow_private, "off by default");
        let cli =
            Cli::try_parse_from(["certwatch", "check", "example.org", "--allow-private"]).unwrap();
        assert!(load_config(&cli).unwrap().probe.allow_private);
        std::fs::write(&path, "[probe]\nallow_private = true\n").unwrap();
        let cli = Cli::try_parse_from(["certwatch", "--config", path.to_str().unwrap(), "serve"])
            .unwrap();
        assert!(load_config(&cli).unwrap().probe.allow_private);
    }
}
