//! Configuration: defaults → `config/default.toml` → a profile file → an optional operator file →
//! `EMPORIUM_*` environment → command-line flags, then [`Config::validate`].
//!
//! The defaults *are* `config/default.toml`, compiled into the binary, so the file that documents every
//! key is also the one source of its default: they cannot drift apart. Errors name the key and where its
//! value came from (figment tracks both).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Deserializer, Serialize};

/// `config/default.toml`: every key, commented.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Profiles selectable with `--profile` / `EMPORIUM_PROFILE`.
pub const PROFILES: &[(&str, &str)] = &[
    ("embedded", include_str!("../../../config/embedded.toml")),
    (
        "distributed",
        include_str!("../../../config/distributed.toml"),
    ),
    ("test", include_str!("../../../config/test.toml")),
];

/// Environment variables with the `EMPORIUM_` prefix that select *how* to load, not settings.
const NOT_SETTINGS: &[&str] = &["profile", "config", "crash_at", "bless"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub log: String,
    #[serde(default, deserialize_with = "lossy_string_opt")]
    pub jwt_secret: Option<String>,
    #[serde(default, deserialize_with = "lossy_string_opt")]
    pub admin_email: Option<String>,
    #[serde(default, deserialize_with = "lossy_string_opt")]
    pub admin_password: Option<String>,
    #[serde(default, deserialize_with = "lossy_string_opt")]
    pub database_url: Option<String>,
    #[serde(default, deserialize_with = "lossy_string_opt")]
    pub kafka_brokers: Option<String>,
    #[serde(default, deserialize_with = "lossy_string_opt")]
    pub redis_url: Option<String>,
    /// Prefix of the databases, topics, consumer groups and cache keys this platform uses on shared
    /// servers (PostgreSQL databases `emporium_<namespace>_<service>`, Kafka `<namespace>.<name>`,
    /// Redis `emporium:<namespace>:…`), so that several environments share one server apart.
    /// Unset: none.
    #[serde(default, deserialize_with = "lossy_string_opt")]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "lossy_string_opt")]
    pub smtp_url: Option<String>,
    pub payment_limit: i64,
    pub shipping_dispatch_delay: DispatchDelay,
    #[serde(with = "human_duration")]
    pub saga_timeout: Duration,
    /// New orders are refused (503, `Retry-After`) while 100 or more `PENDING` orders were placed
    /// longer ago than this: the saga has fallen behind and would only cancel them with `TIMEOUT`.
    #[serde(with = "human_duration")]
    pub max_saga_backlog: Duration,
    /// Most orders one orders instance places at once; the next waits up to
    /// `max_placement_wait` for a place and is refused then (503, `Retry-After`) instead of
    /// queueing in front of the database.
    pub max_placements_in_flight: usize,
    #[serde(with = "human_duration")]
    pub max_placement_wait: Duration,
    pub bus: BusConfig,
    pub http: HttpConfig,
    pub gateway: GatewayConfig,
    pub notifications: NotificationsConfig,
    pub recommendations: RecommendationsConfig,
}

/// The event bus and the consumers' retry policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Partitions of a topic created on first use.
    pub partitions: u32,
    /// Most records handed to a consumer at once.
    pub consumer_batch: usize,
    /// Most outbox rows the relay publishes at once.
    pub relay_batch: usize,
    /// Attempts at one event before it goes to `<topic>.dlq`.
    pub max_attempts: u32,
    #[serde(with = "human_duration")]
    pub retry_backoff: Duration,
    #[serde(with = "human_duration")]
    pub retry_backoff_max: Duration,
    /// Kafka: how long a member that stopped answering keeps its partitions (and how long the
    /// broker may be unreachable before members must rejoin their groups).
    #[serde(with = "human_duration")]
    pub session_timeout: Duration,
    /// `/health` reports a service's outbox DOWN when its oldest unpublished event is older.
    #[serde(with = "human_duration")]
    pub outbox_max_age: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body, bytes.
    pub body_limit: usize,
    #[serde(with = "human_duration")]
    pub request_timeout: Duration,
    #[serde(with = "human_duration")]
    pub shutdown_grace: Duration,
}

/// The edge: CORS, per-client rate limits, GraphQL limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Origins allowed to call the API from a browser; `["*"]` for any, empty for none.
    pub cors_origins: Vec<String>,
    /// Sustained requests per second per client (its token's user, else its IP address).
    pub rate_limit_per_second: u32,
    /// Requests a client may make at once above the sustained rate.
    pub rate_limit_burst: u32,
    /// Deepest GraphQL query accepted.
    pub graphql_depth_limit: usize,
    /// Most complex GraphQL query accepted (each field costs 1, a list multiplies by `first`).
    pub graphql_complexity_limit: usize,
    /// `emporium gateway`: each service's base URL (`http://host:port`), by service name.
    #[serde(default)]
    pub services: std::collections::BTreeMap<String, String>,
}

/// Marketing limits of the notifications service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Most `marketing` notifications one user receives per `marketing_window`; beyond it they are
    /// recorded `SUPPRESSED`.
    pub marketing_limit: u32,
    #[serde(with = "human_duration")]
    pub marketing_window: Duration,
}

/// The recommendations service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendationsConfig {
    /// A user receives the `recommendations` email at most once per this period.
    #[serde(with = "human_duration")]
    pub email_period: Duration,
}

/// `EMPORIUM_SHIPPING_DISPATCH_DELAY`: a duration, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchDelay {
    Off,
    After(Duration),
}

impl Serialize for DispatchDelay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DispatchDelay::Off => s.serialize_str("off"),
            DispatchDelay::After(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for DispatchDelay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.eq_ignore_ascii_case("off") {
            return Ok(DispatchDelay::Off);
        }
        human_duration::parse(&text)
            .map(DispatchDelay::After)
            .map_err(serde::de::Error::custom)
    }
}

/// Where the configuration comes from besides the environment: what the command line says.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// A profile name from [`PROFILES`]; `EMPORIUM_PROFILE` when `None`.
    pub profile: Option<String>,
    /// An extra TOML file; `EMPORIUM_CONFIG` when `None`.
    pub file: Option<PathBuf>,
    /// Flags, highest precedence: a TOML-shaped map of keys to values.
    pub overrides: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration: unknown profile `{0}` (known: embedded, distributed, test)")]
    UnknownProfile(String),
    #[error("invalid configuration: cannot read config file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: `{key}`: {message}")]
    Key { key: &'static str, message: String },
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        // figment's own message names the key and its source (file or environment variable).
        ConfigError::Invalid(
            error
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

impl Config {
    /// Loads every layer for the given sources and the process environment, then validates.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        Self::load_with_env(sources, Env::prefixed("EMPORIUM_"))
    }

    fn load_with_env(sources: &Sources, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        let profile = sources
            .profile
            .clone()
            .or_else(|| std::env::var("EMPORIUM_PROFILE").ok());
        if let Some(name) = profile.filter(|p| !p.is_empty()) {
            let (_, text) = PROFILES
                .iter()
                .find(|(known, _)| *known == name)
                .ok_or_else(|| ConfigError::UnknownProfile(name.clone()))?;
            figment = figment.merge(Toml::string(text));
        }
        let file = sources
            .file
            .clone()
            .or_else(|| std::env::var_os("EMPORIUM_CONFIG").map(PathBuf::from));
        if let Some(path) = file {
            // Read it ourselves: figment silently skips a missing file, an operator's typo must not.
            if let Err(source) = std::fs::metadata(&path) {
                return Err(ConfigError::File { path, source });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(env.split("__").ignore(NOT_SETTINGS));
        for (key, value) in &sources.overrides {
            figment = figment.merge(Serialized::default(key, value));
        }
        let config: Config = figment.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Loads only the compiled-in defaults (and a profile): for tests, which then change what they need.
    pub fn defaults(profile: Option<&str>) -> Result<Config, ConfigError> {
        let sources = Sources {
            profile: Some(profile.unwrap_or_default().to_owned()),
            ..Sources::default()
        };
        // An environment provider that matches nothing: tests must not depend on the caller's shell.
        Self::load_with_env(&sources, Env::prefixed("EMPORIUM_UNUSED_IN_TESTS_"))
    }

    /// Checks what types alone cannot, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key, message: &str| {
            Err(ConfigError::Key {
                key,
                message: message.to_owned(),
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            return fail("data_dir", "must not be empty");
        }
        if let Some(namespace) = &self.namespace {
            let plain = (1..=24).contains(&namespace.len())
                && namespace
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !plain {
                return fail("namespace", "must be 1 to 24 of a-z, 0-9 and _");
            }
        }
        if self.payment_limit <= 0 {
            return fail("payment_limit", "must be a positive amount in minor units");
        }
        if self.saga_timeout.is_zero() {
            return fail("saga_timeout", "must be longer than zero");
        }
        if self.max_saga_backlog.is_zero() {
            return fail("max_saga_backlog", "must be longer than zero");
        }
        if self.max_placements_in_flight == 0 {
            return fail("max_placements_in_flight", "must be at least 1");
        }
        if self.admin_email.is_some() != self.admin_password.is_some() {
            return fail(
                "admin_email",
                "admin_email and admin_password must be set together",
            );
        }
        if let Some(password) = &self.admin_password
            && password.chars().count() < 8
        {
            return fail("admin_password", "must be at least 8 characters");
        }
        if let Some(secret) = &self.jwt_secret
            && secret.len() < 32
        {
            return fail("jwt_secret", "must be at least 32 bytes");
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return fail("database_url", "must be a postgres:// URL");
        }
        if let Some(brokers) = &self.kafka_brokers
            && brokers.split(',').any(|b| b.trim().is_empty())
        {
            return fail(
                "kafka_brokers",
                "must be a comma-separated list of host:port",
            );
        }
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return fail("redis_url", "must be a redis:// URL");
        }
        if let Some(url) = &self.smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            return fail("smtp_url", "must be an smtp:// or smtps:// URL");
        }
        if self.bus.partitions == 0 || self.bus.partitions > 1024 {
            return fail("bus.partitions", "must be between 1 and 1024");
        }
        if !(1..=10_000).contains(&self.bus.consumer_batch) {
            return fail("bus.consumer_batch", "must be between 1 and 10000");
        }
        // The relay deletes what it published with one statement of one parameter per row.
        if !(1..=4096).contains(&self.bus.relay_batch) {
            return fail("bus.relay_batch", "must be between 1 and 4096");
        }
        if self.bus.max_attempts == 0 {
            return fail("bus.max_attempts", "must be at least 1");
        }
        if self.bus.retry_backoff > self.bus.retry_backoff_max {
            return fail(
                "bus.retry_backoff",
                "must not be longer than bus.retry_backoff_max",
            );
        }
        if self.bus.session_timeout < Duration::from_secs(1) {
            return fail("bus.session_timeout", "must be at least 1s");
        }
        if self.bus.outbox_max_age.is_zero() {
            return fail("bus.outbox_max_age", "must be longer than zero");
        }
        if self.http.body_limit < 1024 {
            return fail("http.body_limit", "must be at least 1024 bytes");
        }
        if self.gateway.rate_limit_per_second == 0 {
            return fail("gateway.rate_limit_per_second", "must be at least 1");
        }
        if self.gateway.rate_limit_burst == 0 {
            return fail("gateway.rate_limit_burst", "must be at least 1");
        }
        if self.gateway.graphql_depth_limit == 0 {
            return fail("gateway.graphql_depth_limit", "must be at least 1");
        }
        if self.gateway.graphql_complexity_limit == 0 {
            return fail("gateway.graphql_complexity_limit", "must be at least 1");
        }
        if let Some((name, _)) = self
            .gateway
            .services
            .iter()
            .find(|(_, url)| !(url.starts_with("http://") || url.starts_with("https://")))
        {
            return Err(ConfigError::Key {
                key: "gateway.services",
                message: format!("`{name}` must be an http:// or https:// URL"),
            });
        }
        if self.notifications.marketing_window.is_zero() {
            return fail("notifications.marketing_window", "must be longer than zero");
        }
        Ok(())
    }

    /// Where a service's SQLite file lives in embedded mode.
    pub fn sqlite_path(&self, name: &str) -> PathBuf {
        self.data_dir.join(format!("{name}.db"))
    }
}

/// Accepts a string, or a number or boolean that the environment parser made of one
/// (`EMPORIUM_ADMIN_PASSWORD=12345678` is a password, not an integer).
fn lossy_string_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(Option::<Scalar>::deserialize(d)?.and_then(|v| {
        let text = match v {
            Scalar::Text(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        };
        // An empty variable means "unset", as operators expect from `EMPORIUM_X=`.
        (!text.is_empty()).then_some(text)
    }))
}

/// Durations written the human way: `30s`, `250ms`, `1h 30m`.
pub mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim()).map_err(|e| {
            format!("expected a duration such as `30s` or `250ms`, got `{text}` ({e})")
        })
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
// figment's Jail returns its own (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in(jail_env: &[(&str, &str)], sources: Sources) -> Result<Config, ConfigError> {
        let mut result = None;
        Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in jail_env {
                jail.set_env(k, v);
            }
            result = Some(Config::load(&sources));
            Ok(())
        });
        result.expect("jail ran")
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::defaults(None).unwrap();
        assert_eq!(c.listen, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.payment_limit, 1_000_000);
        assert_eq!(c.saga_timeout, Duration::from_secs(30));
        assert_eq!(c.max_saga_backlog, Duration::from_secs(5));
        assert_eq!(c.max_placements_in_flight, 32);
        assert_eq!(c.max_placement_wait, Duration::ZERO);
        assert_eq!(
            c.shipping_dispatch_delay,
            DispatchDelay::After(Duration::from_secs(30))
        );
        assert_eq!(c.log, "info");
        assert!(c.database_url.is_none() && c.kafka_brokers.is_none());
    }

    #[test]
    fn environment_overrides_files_and_flags_override_environment() {
        let c = load_in(
            &[
                ("EMPORIUM_LISTEN", "127.0.0.1:0"),
                ("EMPORIUM_SAGA_TIMEOUT", "5s"),
                ("EMPORIUM_SHIPPING_DISPATCH_DELAY", "off"),
                ("EMPORIUM_BUS__PARTITIONS", "3"),
                ("EMPORIUM_ADMIN_EMAIL", "root@example.com"),
                ("EMPORIUM_ADMIN_PASSWORD", "12345678"),
            ],
            Sources {
                overrides: vec![("saga_timeout".into(), "7s".into())],
                ..Sources::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.saga_timeout, Duration::from_secs(7));
        assert_eq!(c.shipping_dispatch_delay, DispatchDelay::Off);
        assert_eq!(c.bus.partitions, 3);
        assert_eq!(c.admin_password.as_deref(), Some("12345678"));
    }

    #[test]
    fn a_profile_file_sits_between_defaults_and_environment() {
        let c = load_in(&[("EMPORIUM_PROFILE", "test")], Sources::default()).unwrap();
        assert_eq!(c.listen.port(), 0, "the test profile binds port 0");
        let c = load_in(
            &[
                ("EMPORIUM_PROFILE", "test"),
                ("EMPORIUM_LISTEN", "127.0.0.1:4100"),
            ],
            Sources::default(),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 4100);
    }

    #[test]
    fn an_operator_file_is_read_and_a_missing_one_is_an_error() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "ops.toml",
                "payment_limit = 5000\n[bus]\nmax_attempts = 9\n",
            )?;
            let c = Config::load(&Sources {
                file: Some("ops.toml".into()),
                ..Sources::default()
            })
            .unwrap();
            assert_eq!(c.payment_limit, 5000);
            assert_eq!(c.bus.max_attempts, 9);
            let err = Config::load(&Sources {
                file: Some("missing.toml".into()),
                ..Sources::default()
            })
            .unwrap_err();
            assert!(err.to_string().contains("missing.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("EMPORIUM_SAGA_TIMEOUT", "soon", "saga_timeout"),
            ("EMPORIUM_MAX_SAGA_BACKLOG", "0s", "max_saga_backlog"),
            (
                "EMPORIUM_MAX_PLACEMENTS_IN_FLIGHT",
                "0",
                "max_placements_in_flight",
            ),
            (
                "EMPORIUM_MAX_PLACEMENTS_IN_FLIGHT",
                "many",
                "max_placements_in_flight",
            ),
            (
                "EMPORIUM_MAX_PLACEMENT_WAIT",
                "briefly",
                "max_placement_wait",
            ),
            ("EMPORIUM_LISTEN", "not-an-address", "listen"),
            ("EMPORIUM_PAYMENT_LIMIT", "lots", "payment_limit"),
            ("EMPORIUM_PAYMENT_LIMIT", "-5", "payment_limit"),
            (
                "EMPORIUM_SHIPPING_DISPATCH_DELAY",
                "later",
                "shipping_dispatch_delay",
            ),
            ("EMPORIUM_DATABASE_URL", "mysql://x", "database_url"),
            ("EMPORIUM_BUS__PARTITIONS", "0", "bus.partitions"),
            ("EMPORIUM_BUS__OUTBOX_MAX_AGE", "0s", "bus.outbox_max_age"),
            ("EMPORIUM_NAMESPACE", "Staging-1", "namespace"),
            ("EMPORIUM_JWT_SECRET", "short", "jwt_secret"),
            ("EMPORIUM_LISTN", "127.0.0.1:1", "listn"),
        ];
        for (var, value, key) in cases {
            let err = load_in(&[(var, value)], Sources::default()).unwrap_err();
            // figment names an environment key as written (`SAGA_TIMEOUT`), files as `saga_timeout`.
            let text = err.to_string().to_lowercase().replace("__", ".");
            assert!(
                text.contains(key),
                "{var}={value}: the error should name `{key}`: {text}"
            );
        }
    }

    #[test]
    fn an_unknown_profile_is_an_error() {
        let err = load_in(&[("EMPORIUM_PROFILE", "prod")], Sources::default()).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownProfile(p) if p == "prod"));
    }

    #[test]
    fn admin_email_without_password_is_refused() {
        let err = load_in(&[("EMPORIUM_ADMIN_EMAIL", "a@b.c")], Sources::default()).unwrap_err();
        assert!(err.to_string().contains("admin_email"));
    }
}
