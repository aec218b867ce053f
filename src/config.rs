//! The configuration file (docs/config.md): serde data, one section per subsystem.
//!
//! Every key has a default, so an empty file (or no file at all) is a valid
//! configuration for `check`. Unknown keys are an error that names the key.
//! Every file the program reads as input goes through [`read_bounded`].

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod agents;
pub use agents::{validate_vantages, AgentConfig, VantageConfig, MAX_AGENT_JOBS, MAX_VANTAGES};

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The XMPP component link.
    pub xmpp: XmppConfig,
    /// DNS resolution and DNSSEC validation.
    pub dns: DnsConfig,
    /// How probes reach servers.
    pub probe: ProbeConfig,
    /// The monitoring schedule.
    pub monitor: MonitorConfig,
    /// Where state lives.
    pub store: StoreConfig,
    /// The web front.
    pub web: WebConfig,
    /// `certwatch agent`: its account and coordinator.
    pub agent: AgentConfig,
    /// The agents this coordinator probes through.
    pub vantage: Vec<VantageConfig>,
    /// Whether the file has an `[xmpp]` section: without one, `serve` runs
    /// no XMPP front (the web front alone). Not a key of the file.
    #[serde(skip)]
    pub has_xmpp: bool,
}

/// `[xmpp]`: the XEP-0114 component link.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct XmppConfig {
    /// The component's JID.
    pub component: String,
    /// The XMPP server's component port.
    pub server: String,
    /// The shared secret.
    pub secret: String,
    /// A file holding the shared secret (used when `secret` is empty).
    pub secret_file: String,
    /// Operator JIDs, told when Tor or DNS keeps failing.
    pub admins: Vec<String>,
    /// The largest stanza the component sends; longer texts are cut to fit.
    pub max_stanza_bytes: usize,
}

impl Default for XmppConfig {
    fn default() -> Self {
        XmppConfig {
            component: "certwatch.example.org".into(),
            server: "127.0.0.1:5347".into(),
            secret: String::new(),
            secret_file: String::new(),
            admins: Vec::new(),
            max_stanza_bytes: 64 * 1024,
        }
    }
}

/// `[dns]`: which resolvers to ask and which keys to trust.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// `IP:PORT` (or bare IP, port 53) of resolvers; empty means the system's.
    pub nameservers: Vec<String>,
    /// A file of DNSKEY records to trust; empty means the built-in IANA root keys.
    pub trust_anchor: String,
}

/// How a probe reaches a server.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The embedded arti Tor client.
    #[default]
    Tor,
    /// An existing SOCKS5 proxy, normally a system tor.
    Socks5,
    /// A plain TCP connection (no anonymity).
    Direct,
}

/// Which software a probe speaks as (`probe.s2s_profile`, `probe.c2s_profile`):
/// its TLS library and settings and its stream header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    /// Prosody 0.12 on Debian 12 opening an s2s stream (LuaSec over OpenSSL 3.0).
    Prosody,
    /// Profanity 0.13 on Debian 12 (libstrophe 0.12 over OpenSSL 3.0), a c2s client.
    Profanity,
    /// CertWatch's own rustls handshake and header, kept for comparison.
    Rustls,
}

impl ProfileName {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileName::Prosody => "prosody",
            ProfileName::Profanity => "profanity",
            ProfileName::Rustls => "rustls",
        }
    }
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tor" => Ok(Transport::Tor),
            "socks5" => Ok(Transport::Socks5),
            "direct" => Ok(Transport::Direct),
            other => Err(format!(
                "unknown transport {other:?} (expected tor, socks5 or direct)"
            )),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tor => "tor",
            Transport::Socks5 => "socks5",
            Transport::Direct => "direct",
        })
    }
}

/// `[probe]`: transport and bounds of one probe.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// tor, socks5 or direct.
    pub transport: Transport,
    /// The SOCKS5 proxy for `transport = "socks5"`.
    pub socks5: String,
    /// An arti TOML file merged over the defaults.
    pub arti_config: String,
    /// The upper bound of one probe, connection included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Also probe addresses that are not globally reachable (labs, private deployments).
    pub allow_private: bool,
    /// The most endpoints one check probes (the rest are listed, not probed).
    pub max_endpoints: usize,
    /// The `from` of s2s probes: empty for the parent domain of
    /// `xmpp.component`, "none" for no `from`, or a domain.
    pub s2s_from: String,
    /// Fresh Tor circuits asked for per second at most (every Tor or SOCKS5 probe is one).
    pub circuits_per_second: f64,
    /// How many fresh circuits may be asked for at once after a quiet time.
    pub circuit_burst: u32,
    /// What s2s probes speak as: "prosody" (default) or "rustls".
    pub s2s_profile: ProfileName,
    /// What c2s probes speak as: "profanity" (default) or "rustls".
    pub c2s_profile: ProfileName,
    /// The source address of direct probes (empty: the system's choice).
    pub bind: String,
    /// Whether the coordinator probes from its own place too, beside its agents.
    pub local: bool,
    /// How long a listed agent may stay offline before the operators are told.
    #[serde(with = "humantime_serde")]
    pub vantage_away: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            transport: Transport::Tor,
            socks5: "127.0.0.1:9050".into(),
            arti_config: String::new(),
            timeout: Duration::from_secs(60),
            allow_private: false,
            max_endpoints: 32,
            s2s_from: String::new(),
            circuits_per_second: CIRCUITS_PER_SECOND,
            circuit_burst: CIRCUIT_BURST,
            s2s_profile: ProfileName::Prosody,
            c2s_profile: ProfileName::Profanity,
            bind: String::new(),
            local: true,
            vantage_away: VANTAGE_AWAY,
        }
    }
}

/// How long an agent may stay offline before the operators are told (default).
pub const VANTAGE_AWAY: Duration = Duration::from_secs(300);

/// `[monitor]`: how often each domain is probed.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Time between two checks of one domain.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Up to this much random delay is added to each interval.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Consecutive good checks that end an alarm (1..=10).
    pub recovery_checks: u32,
    /// How long before a signature or certificate runs out subscribers are
    /// warned, once per threshold (a last warning at 12 h is always added).
    #[serde(with = "duration_list")]
    pub warn_before: Vec<Duration>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: Duration::from_secs(3600),
            jitter: Duration::from_secs(600),
            recovery_checks: 2,
            warn_before: vec![
                Duration::from_secs(14 * 86_400),
                Duration::from_secs(3 * 86_400),
            ],
        }
    }
}

/// A list of humantime durations (`["14d", "3d"]`), each error naming the value.
mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            list.iter()
                .map(|d| humantime::format_duration(*d).to_string()),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| {
                humantime::parse_duration(text).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "{text:?} is not a duration like \"14d\" or \"12h\": {e}"
                    ))
                })
            })
            .collect()
    }
}

/// `[store]`: the sled database.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The sled database directory.
    pub path: String,
    /// How long writes may wait with the store making no progress (or the
    /// runtime not ticking) before `serve` gives up and exits 70.
    #[serde(with = "humantime_serde")]
    pub watchdog: Duration,
    /// The most of the database sled keeps in memory, in MiB.
    pub cache_mib: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: "certwatch.db".into(),
            watchdog: Duration::from_secs(60),
            cache_mib: 64,
        }
    }
}

/// `[web]`: the web front (docs/web.md); off unless `listen` is set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// `IP:PORT` to listen on; empty means no web front.
    pub listen: String,
    /// The URL users reach the web front at (links, the feed, the QR code);
    /// empty means `http://` + `listen`.
    pub public_url: String,
    /// Addresses (IPs or CIDR networks) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Serve `/metrics`.
    pub metrics: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: String::new(),
            public_url: String::new(),
            trusted_proxies: Vec::new(),
            metrics: true,
        }
    }
}

impl WebConfig {
    /// Whether the web front runs.
    pub fn enabled(&self) -> bool {
        !self.listen.trim().is_empty()
    }

    /// The listening address, checked.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        resolve_socket(self.listen.trim(), "web.listen").map_err(ConfigError::Invalid)
    }

    /// The public URL without a trailing slash.
    pub fn base_url(&self) -> String {
        let url = self.public_url.trim().trim_end_matches('/');
        if url.is_empty() {
            format!("http://{}", self.listen.trim())
        } else {
            url.to_owned()
        }
    }

    /// The trusted proxies as networks.
    pub fn proxies(&self) -> Result<Vec<(std::net::IpAddr, u8)>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|s| parse_network(s).map_err(ConfigError::Invalid))
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.proxies()?;
        if !self.enabled() {
            return Ok(());
        }
        self.listen_addr()?;
        let url = self.public_url.trim();
        let scheme = url.starts_with("http://") || url.starts_with("https://");
        if !(url.is_empty() || scheme)
            || url.contains(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
        {
            return Err(ConfigError::Invalid(format!(
                "web.public_url must be an http:// or https:// URL, not {url:?}"
            )));
        }
        Ok(())
    }
}

/// Parses `IP` or `IP/PREFIX` (a trusted proxy).
pub fn parse_network(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let bad = || format!("bad web.trusted_proxies entry {s:?}: expected IP or IP/PREFIX");
    let (ip, prefix) = match s.trim().split_once('/') {
        Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| bad())?)),
        None => (s.trim(), None),
    };
    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    if prefix > max {
        return Err(bad());
    }
    Ok((ip, prefix))
}

/// A configuration that could not be used; exit status 78.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML was malformed or had an unknown key or bad value.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and line.
        message: String,
    },
    /// A value parsed but cannot work.
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_bounded(path, INPUT_LIMIT).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        // Parsed twice: serde's defaults hide whether the section was there.
        config.has_xmpp = toml::from_str::<toml::Table>(text)
            .map_err(|e| e.to_string().trim_end().to_owned())?
            .contains_key("xmpp");
        Ok(config)
    }

    /// The nameservers as socket addresses (port 53 when none is given).
    pub fn nameservers(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.dns
            .nameservers
            .iter()
            .map(|s| parse_nameserver(s).map_err(ConfigError::Invalid))
            .collect()
    }

    /// The component secret, from `secret` or `secret_file`: never empty,
    /// never the example config's placeholder.
    pub fn secret(&self) -> Result<String, ConfigError> {
        if !self.xmpp.secret.is_empty() {
            if self.xmpp.secret == EXAMPLE_SECRET {
                return Err(ConfigError::Invalid(format!(
                    "xmpp.secret is still the example's {EXAMPLE_SECRET:?}: choose a secret \
                     of your own and set the same one in the XMPP server's component entry"
                )));
            }
            return Ok(self.xmpp.secret.clone());
        }
        if self.xmpp.secret_file.is_empty() {
            return Err(ConfigError::Invalid(
                "xmpp.secret or xmpp.secret_file must be set for serve".into(),
            ));
        }
        let path = PathBuf::from(&self.xmpp.secret_file);
        let text = read_bounded(&path, SECRET_LIMIT)
            .map_err(|source| ConfigError::Read { path, source })?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "xmpp.secret_file {:?} is empty: it must hold the component secret",
                self.xmpp.secret_file
            )));
        }
        Ok(secret.to_owned())
    }

    /// The `from` our s2s probes send, as a real server's streams carry one
    /// (RFC 6120 §4.7.1): `probe.s2s_from`, else the parent domain of the
    /// component (`certwatch.example.org` → `example.org`), the server the
    /// bot's own stanzas come from. None with "none", and when the component
    /// is the example's placeholder (a `check` without a config file), so a
    /// probe never claims a domain nobody configured.
    pub fn s2s_from(&self) -> Option<String> {
        match self.probe.s2s_from.trim() {
            "none" => None,
            "" => {
                let component = self.xmpp.component.trim().trim_end_matches('.');
                if component == XmppConfig::default().component {
                    return None;
                }
                let (_, parent) = component.split_once('.')?;
                is_hostname(parent).then(|| parent.to_ascii_lowercase())
            }
            other => Some(other.to_ascii_lowercase()),
        }
    }

    /// `probe.bind` as an address: only for the direct transport.
    pub fn probe_bind(&self) -> Result<Option<std::net::IpAddr>, ConfigError> {
        let bind = self.probe.bind.trim();
        if bind.is_empty() {
            return Ok(None);
        }
        let ip = bind.parse().map_err(|_| {
            ConfigError::Invalid(format!("probe.bind must be an IP address, not {bind:?}"))
        })?;
        if self.probe.transport != Transport::Direct {
            return Err(ConfigError::Invalid(format!(
                "probe.bind is for transport = \"direct\" only, not {}",
                self.probe.transport
            )));
        }
        Ok(Some(ip))
    }

    /// Checks what serde cannot: values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.nameservers()?;
        let from = self.probe.s2s_from.trim();
        if !from.is_empty() && from != "none" && !is_hostname(from) {
            return Err(ConfigError::Invalid(format!(
                "probe.s2s_from must be a domain, \"none\" or empty, not {from:?}"
            )));
        }
        if self.probe.transport == Transport::Socks5 {
            resolve_socket(&self.probe.socks5, "probe.socks5").map_err(ConfigError::Invalid)?;
        }
        if !(4096..=1024 * 1024).contains(&self.xmpp.max_stanza_bytes) {
            return Err(ConfigError::Invalid(format!(
                "xmpp.max_stanza_bytes must be between 4096 and 1048576, not {}",
                self.xmpp.max_stanza_bytes
            )));
        }
        for (key, value, (min, max)) in [
            ("probe.timeout", self.probe.timeout, TIMEOUT_RANGE),
            ("monitor.interval", self.monitor.interval, INTERVAL_RANGE),
            ("monitor.jitter", self.monitor.jitter, JITTER_RANGE),
            ("store.watchdog", self.store.watchdog, WATCHDOG_RANGE),
        ] {
            check_duration(key, value, min, max)?;
        }
        if !(1..=MAX_CACHE_MIB).contains(&self.store.cache_mib) {
            return Err(ConfigError::Invalid(format!(
                "store.cache_mib must be between 1 and {MAX_CACHE_MIB}, not {}",
                self.store.cache_mib
            )));
        }
        if self.store.path.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "store.path must name the database directory, not be empty".into(),
            ));
        }
        if !(1..=MAX_ENDPOINTS_LIMIT).contains(&self.probe.max_endpoints) {
            return Err(ConfigError::Invalid(format!(
                "probe.max_endpoints must be between 1 and {MAX_ENDPOINTS_LIMIT}, not {}",
                self.probe.max_endpoints
            )));
        }
        if self.monitor.warn_before.len() > MAX_WARN_BEFORE {
            return Err(ConfigError::Invalid(format!(
                "monitor.warn_before has {} thresholds; at most {MAX_WARN_BEFORE}",
                self.monitor.warn_before.len()
            )));
        }
        for d in &self.monitor.warn_before {
            let (min, max) = WARN_BEFORE_RANGE;
            check_duration("monitor.warn_before", *d, min, max)?;
        }
        if !(1..=10).contains(&self.monitor.recovery_checks) {
            return Err(ConfigError::Invalid(format!(
                "monitor.recovery_checks must be between 1 and 10, not {}",
                self.monitor.recovery_checks
            )));
        }
        self.web.validate()?;
        self.probe_bind()?;
        validate_vantages(&self.vantage)?;
        if !self.probe.local && self.vantage.is_empty() {
            return Err(ConfigError::Invalid(
                "probe.local = false needs at least one [[vantage]] to probe from".into(),
            ));
        }
        let rate = self.probe.circuits_per_second;
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_CIRCUITS_PER_SECOND) {
            return Err(ConfigError::Invalid(format!(
                "probe.circuits_per_second must be above 0 and at most {MAX_CIRCUITS_PER_SECOND}, not {rate}"
            )));
        }
        if !(1..=MAX_CIRCUIT_BURST).contains(&self.probe.circuit_burst) {
            return Err(ConfigError::Invalid(format!(
                "probe.circuit_burst must be between 1 and {MAX_CIRCUIT_BURST}, not {}",
                self.probe.circuit_burst
            )));
        }
        Ok(())
    }
}

/// A DNS host name in ASCII (punycode for IDNs): dot-separated labels of
/// letters, digits and inner hyphens, 1 to 63 bytes each, 253 in all.
fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The name reports give the coordinator's own vantage.
pub const LOCAL_VANTAGE: &str = "local";

/// Fresh Tor circuits per second, unless configured otherwise
/// (`probe.circuits_per_second`).
pub const CIRCUITS_PER_SECOND: f64 = 2.0;
/// How many fresh circuits may be asked for at once after a quiet time
/// (`probe.circuit_burst`).
pub const CIRCUIT_BURST: u32 = 30;

/// The example config's placeholder secret, refused by `serve`.
pub const EXAMPLE_SECRET: &str = "change-me";

/// `probe.timeout` bounds: one probe may take 1 s to 1 h.
pub const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// `monitor.interval` bounds: 1 s (labs) to 30 days.
pub const INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(30 * 86_400));
/// The largest `store.cache_mib` (64 GiB).
pub const MAX_CACHE_MIB: u64 = 64 << 10;
/// `store.watchdog` bounds: 5 s (tests) to 1 h.
pub const WATCHDOG_RANGE: (Duration, Duration) =
    (Duration::from_secs(5), Duration::from_secs(3600));
/// `monitor.warn_before` bounds, for each threshold: 1 minute to 1 year.
pub const WARN_BEFORE_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(365 * 86_400));
/// The most thresholds `monitor.warn_before` may list.
pub const MAX_WARN_BEFORE: usize = 8;
/// `monitor.jitter` bounds: none to 30 days.
pub const JITTER_RANGE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(30 * 86_400));

fn check_duration(
    key: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::Invalid(format!(
        "{key} = {:?} is out of range: it must be between {} and {}",
        humantime::format_duration(value).to_string(),
        humantime::format_duration(min),
        humantime::format_duration(max)
    )))
}

/// The most any input file (config, trust anchor, arti config, certificate or key) may hold.
pub const INPUT_LIMIT: u64 = 1 << 20;
/// The most a `secret_file` may hold.
pub const SECRET_LIMIT: u64 = 64 << 10;

/// Reads a UTF-8 regular file of at most `limit` bytes. The open never
/// blocks (a FIFO would wait for a writer forever) and anything but a
/// regular file (a FIFO, a device, a directory, a socket) is refused; no
/// more than `limit + 1` bytes are read (a file that grows): a bigger one
/// is an error, not a hang.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file"),
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "larger than {}; too big for this input",
            size(limit)
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The largest `probe.max_endpoints`: every endpoint discovery can yield
/// (4 services × 16 SRV targets × 8 addresses).
pub const MAX_ENDPOINTS_LIMIT: usize = 512;

/// The largest `probe.circuits_per_second` (for private Tor networks; the
/// public network's relays start refusing a client at 3 per second).
pub const MAX_CIRCUITS_PER_SECOND: f64 = 1000.0;

/// The largest `probe.circuit_burst`.
pub const MAX_CIRCUIT_BURST: u32 = 10_000;

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Parses `IP`, `IP:PORT` or `[IPv6]:PORT` into a socket address.
pub fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("bad nameserver {s:?}: expected IP or IP:PORT"))
}

/// Parses `HOST:PORT` (a host name is looked up, e.g. `localhost:9050`), naming the key on error.
pub fn resolve_socket(s: &str, key: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("bad {key} {s:?}: expected HOST:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("certwatch.example.toml");
        let config = Config::load(&path).expect("example loads");
        let mut expected = Config::default();
        expected.xmpp.secret = "change-me".into();
        expected.has_xmpp = true;
        assert_eq!(config, expected);
        config.validate().unwrap();
        // The placeholder secret is there to be replaced: serve refuses it.
        assert!(config.secret().is_err());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[probe]\ntransprt = \"tor\"\n").unwrap_err();
        assert!(err.contains("transprt"), "{err}");
        let err = Config::parse("[monitr]\n").unwrap_err();
        assert!(err.contains("monitr"), "{err}");
    }

    #[test]
    fn durations_are_humantime() {
        let c = Config::parse("[monitor]\ninterval = \"90m\"\njitter = \"30s\"\n").unwrap();
        assert_eq!(c.monitor.interval, Duration::from_secs(5400));
        assert_eq!(c.monitor.jitter, Duration::from_secs(30));
        assert!(Config::parse("[monitor]\ninterval = \"soon\"\n").is_err());
    }

    #[test]
    fn bad_values_are_rejected() {
        let c = Config::parse("[dns]\nnameservers = [\"not-an-ip\"]\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("not-an-ip"));
        assert!(Config::parse("[probe]\ntransport = \"carrier-pigeon\"\n").is_err());
        let c = Config::parse("[probe]\ntransport = \"socks5\"\nsocks5 = \"x\"\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::parse("[probe]\ntransport = \"socks5\"\nsocks5 = \"localhost:9050\"\n")
            .unwrap();
        c.validate().unwrap();
        for bad in ["0", "513"] {
            let c = Config::parse(&format!("[probe]\nmax_endpoints = {bad}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("probe.max_endpoints"), "{err}");
        }
        let c = Config::parse("[probe]\nmax_endpoints = 512\n").unwrap();
        assert!(c.validate().is_ok());
        // The s2s `from`: the component's parent, none for the placeholder.
        assert_eq!(c.s2s_from(), None, "a check without config claims nothing");
        let c = Config::parse("[xmpp]\ncomponent = \"certwatch.example.net\"\n").unwrap();
        assert_eq!(c.s2s_from().as_deref(), Some("example.net"));
        let c = Config::parse("[xmpp]\ncomponent = \"certwatch\"\n").unwrap();
        assert_eq!(c.s2s_from(), None, "no parent");
        let c = Config::parse(
            "[xmpp]\ncomponent = \"certwatch.example.net\"\n[probe]\ns2s_from = \"none\"\n",
        )
        .unwrap();
        assert_eq!(c.s2s_from(), None);
        let c = Config::parse("[probe]\ns2s_from = \"Relay.Example.COM\"\n").unwrap();
        assert_eq!(c.s2s_from().as_deref(), Some("relay.example.com"));
        let c = Config::parse("[probe]\ns2s_from = \"not a domain\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("probe.s2s_from"), "{err}");
        let c = Config::parse("[probe]\nmax_endpoints = 512\n").unwrap();
        c.validate().unwrap();
        for bad in ["0", "-1", "nan", "inf", "1001"] {
            let c = Config::parse(&format!("[probe]\ncircuits_per_second = {bad}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("probe.circuits_per_second"), "{bad}: {err}");
        }
        let c = Config::parse("[probe]\ncircuits_per_second = 0.5\ncircuit_burst = 1\n").unwrap();
        c.validate().unwrap();
        let c = Config::parse("[probe]\ncircuit_burst = 0\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("probe.circuit_burst"), "{err}");
    }

    #[test]
    fn absurd_durations_are_refused_naming_the_key() {
        for (text, key) in [
            ("[probe]\ntimeout = \"0s\"\n", "probe.timeout"),
            ("[probe]\ntimeout = \"2h\"\n", "probe.timeout"),
            ("[probe]\ntimeout = \"400000years\"\n", "probe.timeout"),
            ("[monitor]\ninterval = \"500ms\"\n", "monitor.interval"),
            ("[monitor]\ninterval = \"31days\"\n", "monitor.interval"),
            ("[monitor]\njitter = \"1000years\"\n", "monitor.jitter"),
        ] {
            let c = Config::parse(text).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains("out of range"),
                "{text}: {err}"
            );
        }
        // Once an overflow inside every check task.
        let c = Config::parse("[probe]\ntimeout = \"400000000000years\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("probe.timeout"), "{err}");
        for good in ["timeout = \"1s\"", "timeout = \"1h\""] {
            Config::parse(&format!("[probe]\n{good}\n"))
                .unwrap()
                .validate()
                .unwrap();
        }
    }

    #[test]
    fn warn_before_is_a_humantime_list_checked_naming_the_key() {
        let c = Config::parse("[monitor]\nwarn_before = [\"30d\", \"7d\", \"1d\"]\n").unwrap();
        let days: Vec<u64> = c
            .monitor
            .warn_before
            .iter()
            .map(|d| d.as_secs() / 86_400)
            .collect();
        assert_eq!(days, [30, 7, 1]);
        c.validate().unwrap();
        // Empty: only the last warning at 12 h.
        let c = Config::parse("[monitor]\nwarn_before = []\n").unwrap();
        c.validate().unwrap();
        let err = Config::parse("[monitor]\nwarn_before = [\"14d\", \"soon\"]\n").unwrap_err();
        assert!(
            err.contains("warn_before") && err.contains("\"soon\""),
            "{err}"
        );
        let err = Config::parse("[monitor]\nwarn_before = \"14d\"\n").unwrap_err();
        assert!(err.contains("warn_before"), "{err}");
        for bad in [
            "[\"10s\"]",
            "[\"2years\"]",
            "[\"1d\",\"1d\",\"1d\",\"1d\",\"1d\",\"1d\",\"1d\",\"1d\",\"1d\"]",
        ] {
            let c = Config::parse(&format!("[monitor]\nwarn_before = {bad}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("monitor.warn_before"), "{bad}: {err}");
        }
    }

    #[test]
    fn empty_store_path_is_refused() {
        let c = Config::parse("[store]\npath = \"\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("store.path"), "{err}");
    }

    #[test]
    fn secret_is_neither_empty_nor_the_placeholder() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        let c = Config::parse(&format!("[xmpp]\nsecret_file = {empty:?}\n")).unwrap();
        let err = c.secret().unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let c = Config::parse("[xmpp]\nsecret = \"change-me\"\n").unwrap();
        let err = c.secret().unwrap_err().to_string();
        assert!(err.contains("change-me"), "{err}");
        let big = dir.path().join("big");
        std::fs::write(&big, "x".repeat(65 << 10)).unwrap();
        let c = Config::parse(&format!("[xmpp]\nsecret_file = {big:?}\n")).unwrap();
        let err = c.secret().unwrap_err().to_string();
        assert!(err.contains("larger than 64 KiB"), "{err}");
        let c = Config::parse("[xmpp]\nsecret_file = \"/dev/zero\"\n").unwrap();
        let err = c.secret().unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        let c = Config::parse(&format!("[xmpp]\nsecret_file = {:?}\n", path)).unwrap();
        assert_eq!(c.secret().unwrap(), "s3cret");
    }

    #[test]
    fn inputs_are_read_within_their_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x".repeat(100)).unwrap();
        assert_eq!(read_bounded(&path, 100).unwrap().len(), 100);
        let err = read_bounded(&path, 99).unwrap_err();
        assert!(err.to_string().contains("larger than 99 bytes"), "{err}");
    }

    #[test]
    fn only_regular_files_are_read_and_a_fifo_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // With no writer, a blocking open would never return.
        let err = read_bounded(&fifo, INPUT_LIMIT).unwrap_err();
        assert!(err.to_string().contains("a FIFO (named pipe)"), "{err}");
        for (path, what) in [
            ("/dev/zero", "a device"),
            ("/dev/null", "a device"),
            ("/", "a directory"),
        ] {
            let err = read_bounded(Path::new(path), INPUT_LIMIT).unwrap_err();
            assert!(err.to_string().contains(what), "{path}: {err}");
        }
    }

    /// Every key of every section, as `section.key`, from the real defaults.
    fn all_keys() -> Vec<String> {
        let table = toml::Table::try_from(Config::default()).unwrap();
        let mut keys = Vec::new();
        for (section, value) in &table {
            // `[[vantage]]` is a list, empty by default: documented apart.
            let Some(value) = value.as_table() else {
                continue;
            };
            for key in value.keys() {
                keys.push(format!("{section}.{key}"));
            }
        }
        assert!(keys.len() > 15, "{keys:?}");
        keys
    }

    #[test]
    fn every_key_is_in_the_example_and_in_docs_config_md() {
        let example: toml::Table =
            toml::from_str(include_str!("../certwatch.example.toml")).unwrap();
        let docs = include_str!("../docs/config.md");
        for key in all_keys() {
            let (section, name) = key.split_once('.').unwrap();
            assert!(
                example.get(section).and_then(|s| s.get(name)).is_some(),
                "certwatch.example.toml lacks {key}"
            );
            assert!(
                docs.contains(&format!("`{key}`")),
                "docs/config.md lacks `{key}`"
            );
        }
    }

    #[test]
    fn web_section_is_checked_and_xmpp_presence_is_seen() {
        let c = Config::parse("[web]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
        assert!(c.web.enabled() && !c.has_xmpp && c.web.metrics);
        c.validate().unwrap();
        assert_eq!(c.web.base_url(), "http://127.0.0.1:8080");
        let c = Config::parse("[xmpp]\n[web]\npublic_url = \"https://cw.example/\"\n").unwrap();
        assert!(c.has_xmpp && !c.web.enabled());
        assert_eq!(c.web.base_url(), "https://cw.example");
        assert!(Config::parse("[web]\nlisen = \"x\"\n")
            .unwrap_err()
            .contains("lisen"));
        for (bad, key) in [
            ("listen = \"nowhere\"", "web.listen"),
            (
                "listen = \"127.0.0.1:1\"\npublic_url = \"ftp://x\"",
                "web.public_url",
            ),
            ("trusted_proxies = [\"10.0.0.0/33\"]", "web.trusted_proxies"),
            ("trusted_proxies = [\"proxy\"]", "web.trusted_proxies"),
        ] {
            let c = Config::parse(&format!("[web]\n{bad}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        let c = Config::parse("[web]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        assert_eq!(
            c.web.proxies().unwrap(),
            vec![
                ("10.0.0.0".parse().unwrap(), 8),
                ("::1".parse().unwrap(), 128)
            ]
        );
    }

    #[test]
    fn nameserver_port_defaults_to_53() {
        assert_eq!(
            parse_nameserver("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_nameserver("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
    }
}
