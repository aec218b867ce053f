//! `[agent]` (a `certwatch agent` process) and `[[vantage]]` (the agents a
//! coordinator takes probe results from).

use serde::{Deserialize, Serialize};

use super::{read_bounded, ConfigError, SECRET_LIMIT};

/// `[agent]`: a probe-only process that logs in to an XMPP server as an
/// ordinary client and probes for one coordinator.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's own account, `user@host`.
    pub jid: String,
    /// The account's password.
    pub password: String,
    /// A file holding the password (used when `password` is empty).
    pub password_file: String,
    /// The coordinator's component JID: the only one whose jobs are served.
    pub coordinator: String,
    /// Where to log in, `HOST:PORT`; empty: the JID's domain, port 5222.
    pub server: String,
    /// A PEM file of certificates to trust for the login connection (a
    /// private CA, or the server's own self-signed certificate) instead of
    /// the built-in web roots. A certificate of the file presented exactly is
    /// pinned (no name check); other chains are verified with the name.
    pub trust_file: String,
    /// The name the login certificate must carry; empty: the JID's domain.
    pub tls_name: String,
    /// Jobs run at once at most; more are answered "busy".
    pub max_jobs: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            jid: String::new(),
            password: String::new(),
            password_file: String::new(),
            coordinator: String::new(),
            server: String::new(),
            trust_file: String::new(),
            tls_name: String::new(),
            max_jobs: DEFAULT_AGENT_JOBS,
        }
    }
}

/// Jobs an agent runs at once unless configured otherwise.
pub const DEFAULT_AGENT_JOBS: usize = 8;

/// The most jobs an agent may be configured to run at once.
pub const MAX_AGENT_JOBS: usize = 256;

/// The most vantages a coordinator may list.
pub const MAX_VANTAGES: usize = 64;

/// `[[vantage]]`: one agent a coordinator sends probes to.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VantageConfig {
    /// The name reports give this vantage.
    pub name: String,
    /// The agent's bare JID (`user@host`).
    pub jid: String,
    /// Its share of the probes relative to the others (1..=100; the
    /// coordinator's own vantage weighs 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl AgentConfig {
    /// The password, from `password` or `password_file`: never empty.
    pub fn password(&self) -> Result<String, ConfigError> {
        if !self.password.is_empty() {
            return Ok(self.password.clone());
        }
        if self.password_file.is_empty() {
            return Err(ConfigError::Invalid(
                "agent.password or agent.password_file must be set for agent".into(),
            ));
        }
        let path = std::path::PathBuf::from(&self.password_file);
        let text = read_bounded(&path, SECRET_LIMIT)
            .map_err(|source| ConfigError::Read { path, source })?;
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "agent.password_file {:?} is empty",
                self.password_file
            )));
        }
        Ok(password.to_owned())
    }

    /// What `certwatch agent` needs beyond the defaults.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Invalid(what));
        match self.jid.split_once('@') {
            Some((user, host)) if !user.is_empty() && !host.is_empty() && !host.contains('/') => {}
            _ => return bad(format!("agent.jid must be user@host, not {:?}", self.jid)),
        }
        if self.coordinator.trim().is_empty() || self.coordinator.contains(['@', '/']) {
            return bad(format!(
                "agent.coordinator must be the coordinator's component JID (a domain), not {:?}",
                self.coordinator
            ));
        }
        if !(1..=MAX_AGENT_JOBS).contains(&self.max_jobs) {
            return bad(format!(
                "agent.max_jobs must be between 1 and {MAX_AGENT_JOBS}, not {}",
                self.max_jobs
            ));
        }
        Ok(())
    }

    /// Jobs at once.
    pub fn max_jobs(&self) -> usize {
        self.max_jobs
    }
}

/// Checks the `[[vantage]]` list: names and JIDs unique, weights sane.
pub fn validate_vantages(list: &[VantageConfig]) -> Result<(), ConfigError> {
    let bad = |what: String| Err(ConfigError::Invalid(what));
    if list.len() > MAX_VANTAGES {
        return bad(format!(
            "at most {MAX_VANTAGES} [[vantage]] entries, not {}",
            list.len()
        ));
    }
    for (i, v) in list.iter().enumerate() {
        if v.name.is_empty() || v.name.len() > 64 || v.name.chars().any(|c| c.is_control()) {
            return bad(format!(
                "vantage.name must be 1 to 64 printable characters, not {:?}",
                v.name
            ));
        }
        match v.jid.split_once('@') {
            Some((u, h)) if !u.is_empty() && !h.is_empty() && !h.contains('/') => {}
            _ => {
                return bad(format!(
                    "vantage {:?}: jid must be a bare user@host, not {:?}",
                    v.name, v.jid
                ))
            }
        }
        if !(1..=100).contains(&v.weight) {
            return bad(format!(
                "vantage {:?}: weight must be between 1 and 100, not {}",
                v.name, v.weight
            ));
        }
        let twin = list[..i]
            .iter()
            .find(|o| o.name == v.name || o.jid.eq_ignore_ascii_case(&v.jid));
        if let Some(o) = twin {
            return bad(format!(
                "vantage {:?} repeats the name or jid of {:?}",
                v.name, o.name
            ));
        }
        if v.name == crate::config::LOCAL_VANTAGE {
            return bad(format!(
                "vantage name {:?} is the coordinator's own",
                v.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vantage(name: &str, jid: &str, weight: u32) -> VantageConfig {
        VantageConfig {
            name: name.into(),
            jid: jid.into(),
            weight,
        }
    }

    #[test]
    fn vantage_lists_are_checked() {
        assert!(validate_vantages(&[vantage("a", "a@h", 1), vantage("b", "b@h", 3)]).is_ok());
        for bad in [
            vec![vantage("a", "a@h", 1), vantage("a", "b@h", 1)],
            vec![vantage("a", "a@h", 1), vantage("b", "A@h", 1)],
            vec![vantage("a", "h", 1)],
            vec![vantage("a", "a@h/r", 1)],
            vec![vantage("a", "a@h", 0)],
            vec![vantage("", "a@h", 1)],
            vec![vantage("local", "a@h", 1)],
        ] {
            assert!(validate_vantages(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn agent_needs_a_jid_and_a_coordinator() {
        let mut a = AgentConfig {
            jid: "probe1@example.org".into(),
            coordinator: "certwatch.example.org".into(),
            ..AgentConfig::default()
        };
        assert!(a.validate().is_ok());
        a.coordinator = "someone@example.org".into();
        assert!(a.validate().is_err());
        a.coordinator = "certwatch.example.org".into();
        a.jid = "example.org".into();
        assert!(a.validate().is_err());
        assert!(AgentConfig::default().password().is_err());
        // No job at once is no agent: an error, not a silent default.
        a.jid = "probe1@example.org".into();
        a.max_jobs = 0;
        assert!(a.validate().is_err());
        a.max_jobs = MAX_AGENT_JOBS + 1;
        assert!(a.validate().is_err());
    }
}
