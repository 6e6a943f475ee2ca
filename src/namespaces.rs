//! Namespaces: per-room options chosen by room-name pattern from the config file.
//!
//! ```toml
//! [[namespace]]
//! pattern = "chat:*"     # trailing `*` = prefix match, otherwise exact; "*" = every room
//! history_size = 100     # messages kept per room, 0 = history off
//! history_ttl = "10m"    # "90s", "10m", "1h", or a number of seconds
//! presence = "auto"      # "auto" (notices up to the threshold, then counts), "on", "off"
//! presence_threshold = 64
//! ```
//!
//! **First match wins, in file order**, like firewall rules: the file reads top to bottom
//! and a reader never has to compare pattern lengths. A namespace that an earlier one
//! makes unreachable (`"*"` before `"chat:*"`, or the same pattern twice) is a config
//! error, so the order cannot silently hide a rule. A key a namespace leaves out takes the
//! global default the caller supplies (flags, env, TOML top level). Rooms matching no
//! namespace get the defaults.
//!
//! [`RoomOptions`] is the growing set of per-room options: history (issue 10) and
//! presence (issue 11), new optional keys of [`NamespaceSpec`] resolved the same way.
//!
//! **Permissions** (what clients may do, checked by the workers) come from the same
//! tables, in the same first-match order, and go to the workers as
//! [`PermissionRules`] ([`Namespaces::permissions`]):
//!
//! ```toml
//! [[namespace]]
//! pattern = "chat:*"
//! anonymous = ["join", "history"]                          # everyone
//! authenticated = ["join", "publish", "history", "presence"] # any valid token
//! granted = []                                             # only with a grant in the token
//! user_limited = false                                     # `dm:#42,57`: users 42 and 57 only
//! ```
//! A namespace that sets none of these four keys leaves its rooms open to everyone, as
//! rooms matching no namespace are; one that sets any of them allows exactly what it
//! lists (an unset list is empty).

use std::time::Duration;

use serde::Deserialize;
use wsfleet_worker::auth::capability::Capabilities;
use wsfleet_worker::auth::permissions::{PermissionRules, RoomRule};
use wsfleet_worker::protocol::{MAX_ROOM_BYTES, PatternError, RoomPattern};

/// Largest `history_size` accepted: far above any sensible room history, low enough that
/// a typo (an extra zero or three) is caught at start rather than by the memory budget.
pub const MAX_HISTORY_SIZE: usize = 1_000_000;

/// Longest `history_ttl` accepted (7 days): history is for reconnects, not an archive.
pub const MAX_HISTORY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A room's history settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Messages kept per room; 0 turns history off for the room.
    pub size: usize,
    /// How long a message stays recoverable after it was published.
    pub ttl: Duration,
}

impl HistoryOptions {
    /// Whether the room keeps history at all.
    pub fn enabled(&self) -> bool {
        self.size > 0
    }
}

/// What a room's other members hear of joins and leaves (`src/master/presence.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceMode {
    /// Notices while the room has at most `threshold` members, a coalesced count above.
    Auto,
    /// Notices at any size.
    On,
    /// Nothing (a `presence` request still answers).
    Off,
}

/// A room's presence settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceOptions {
    /// Notices, counts or nothing.
    pub mode: PresenceMode,
    /// Most members a room in mode `auto` sends notices (and lists members) for.
    pub threshold: usize,
}

impl Default for PresenceOptions {
    fn default() -> Self {
        Self {
            mode: PresenceMode::Auto,
            threshold: crate::defaults::PRESENCE_THRESHOLD,
        }
    }
}

/// Everything a namespace can set for a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomOptions {
    /// History and recovery.
    pub history: HistoryOptions,
    /// Join/leave notices or counts.
    pub presence: PresenceOptions,
}

/// One `[[namespace]]` table as written in the file (before validation).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    /// `"prefix*"`, `"exact-name"` or `"*"`.
    pub pattern: String,
    /// Messages kept per room (0 = off); signed so that `-1` gets a clear error.
    pub history_size: Option<i64>,
    /// Seconds, or text with a unit.
    pub history_ttl: Option<TtlValue>,
    /// What every client may do here (with or without a token).
    pub anonymous: Option<Capabilities>,
    /// What any valid token's holder may do besides.
    pub authenticated: Option<Capabilities>,
    /// What a token may grant here (a matching grant in the token is needed).
    pub granted: Option<Capabilities>,
    /// Whether `prefix#id,id` rooms admit only the users they name.
    pub user_limited: Option<bool>,
    /// `"auto"`, `"on"` or `"off"`.
    pub presence: Option<PresenceMode>,
    /// Members up to which mode `auto` sends notices.
    pub presence_threshold: Option<usize>,
}

/// A TTL as the file may spell it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TtlValue {
    /// A number of seconds.
    Seconds(f64),
    /// `"90s"`, `"10m"`, `"1h"`, or digits.
    Text(String),
}

/// The config error's wording for a refused pattern (it follows the quoted pattern).
fn pattern_why(e: PatternError) -> String {
    match e {
        PatternError::Empty => "is empty (use \"*\" for every room)".into(),
        PatternError::TooLong => format!("is longer than {} bytes", MAX_ROOM_BYTES + 1),
        PatternError::InnerStar(_) => "may only have `*` at its end (prefix match)".into(),
    }
}

/// A validated namespace: a pattern and the options it sets (unset = default).
#[derive(Debug, Clone, PartialEq)]
struct Namespace {
    /// Which rooms.
    pattern: RoomPattern,
    /// Overrides `defaults.history.size`.
    history_size: Option<usize>,
    /// Overrides `defaults.history.ttl`.
    history_ttl: Option<Duration>,
    /// Who may do what in these rooms.
    rule: RoomRule,
    /// Overrides `defaults.presence.mode`.
    presence: Option<PresenceMode>,
    /// Overrides `defaults.presence.threshold`.
    presence_threshold: Option<usize>,
}

/// Why the namespaces in a config are not usable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NamespaceError {
    /// `namespace` is not an array of tables.
    #[error("`namespace` must be an array of tables ([[namespace]] sections), not {found}")]
    NotArray {
        /// The TOML type found.
        found: String,
    },
    /// A table has unknown keys or wrong types.
    #[error(
        "namespace[{index}]: {message}; keys are pattern, history_size, history_ttl, \
         presence, presence_threshold, anonymous, authenticated, granted, user_limited"
    )]
    Parse {
        /// Position in the file (0-based).
        index: usize,
        /// The parser's explanation.
        message: String,
    },
    /// A key has a bad value.
    #[error("namespace[{index}].{key}: {message}")]
    Invalid {
        /// Position in the file (0-based).
        index: usize,
        /// The bad key.
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// An earlier namespace catches every room this one would.
    #[error(
        "namespace[{index}] pattern {pattern:?} can never match: namespace[{earlier}] \
         {earlier_pattern:?} comes first and first match wins; move the narrower one up"
    )]
    Shadowed {
        /// The unreachable namespace.
        index: usize,
        /// Its pattern.
        pattern: String,
        /// The namespace that hides it.
        earlier: usize,
        /// Its pattern.
        earlier_pattern: String,
    },
}

/// The namespaces of a config plus the global defaults: answers "what options does this
/// room have".
#[derive(Debug, Clone, PartialEq)]
pub struct Namespaces {
    /// Options of rooms no namespace matches, and of keys a namespace leaves out.
    defaults: RoomOptions,
    /// In file order; the first match wins.
    list: Vec<Namespace>,
}

impl Namespaces {
    /// No namespaces: every room gets `defaults`.
    pub fn new(defaults: RoomOptions) -> Self {
        Self {
            defaults,
            list: Vec::new(),
        }
    }

    /// Validates `specs` (in file order) over `defaults`.
    pub fn from_specs(
        defaults: RoomOptions,
        specs: &[NamespaceSpec],
    ) -> Result<Self, NamespaceError> {
        let mut list: Vec<Namespace> = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            let ns = validate(index, spec)?;
            if let Some(earlier) = list.iter().position(|e| e.pattern.covers(&ns.pattern)) {
                return Err(NamespaceError::Shadowed {
                    index,
                    pattern: spec.pattern.clone(),
                    earlier,
                    earlier_pattern: specs[earlier].pattern.clone(),
                });
            }
            list.push(ns);
        }
        Ok(Self { defaults, list })
    }

    /// Reads the `namespace` key of a parsed config file (absent = no namespaces).
    pub fn from_toml(defaults: RoomOptions, config: &toml::Table) -> Result<Self, NamespaceError> {
        let Some(value) = config.get("namespace") else {
            return Ok(Self::new(defaults));
        };
        let toml::Value::Array(items) = value else {
            return Err(NamespaceError::NotArray {
                found: value.type_str().to_owned(),
            });
        };
        let specs = items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                NamespaceSpec::deserialize(item.clone()).map_err(|e| NamespaceError::Parse {
                    index,
                    message: e.to_string().trim().to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_specs(defaults, &specs)
    }

    /// The permission rules the workers check, one per namespace in file order.
    pub fn permissions(&self) -> PermissionRules {
        PermissionRules {
            rules: self.list.iter().map(|ns| ns.rule.clone()).collect(),
        }
    }

    /// The options of `room`.
    pub fn lookup(&self, room: &str) -> RoomOptions {
        let mut options = self.defaults;
        if let Some(ns) = self.list.iter().find(|ns| ns.pattern.matches(room)) {
            options.history.size = ns.history_size.unwrap_or(options.history.size);
            options.history.ttl = ns.history_ttl.unwrap_or(options.history.ttl);
            options.presence.mode = ns.presence.unwrap_or(options.presence.mode);
            options.presence.threshold =
                ns.presence_threshold.unwrap_or(options.presence.threshold);
        }
        options
    }
}

fn validate(index: usize, spec: &NamespaceSpec) -> Result<Namespace, NamespaceError> {
    let invalid = |key, message: String| NamespaceError::Invalid {
        index,
        key,
        message,
    };
    let pattern = RoomPattern::parse(&spec.pattern)
        .map_err(|e| invalid("pattern", format!("{:?} {}", spec.pattern, pattern_why(e))))?;
    let history_size = spec
        .history_size
        .map(|n| match usize::try_from(n) {
            Ok(n) if n <= MAX_HISTORY_SIZE => Ok(n),
            _ => Err(invalid(
                "history_size",
                format!("{n} is not a number of messages from 0 (off) to {MAX_HISTORY_SIZE}"),
            )),
        })
        .transpose()?;
    let history_ttl = spec
        .history_ttl
        .as_ref()
        .map(|v| parse_ttl(v).map_err(|m| invalid("history_ttl", m)))
        .transpose()?;
    let says_who = spec.anonymous.is_some()
        || spec.authenticated.is_some()
        || spec.granted.is_some()
        || spec.user_limited.is_some();
    let rule = RoomRule {
        pattern: pattern.clone(),
        anonymous: match says_who {
            true => spec.anonymous.unwrap_or(Capabilities::NONE),
            false => Capabilities::ALL,
        },
        authenticated: spec.authenticated.unwrap_or(Capabilities::NONE),
        granted: spec.granted.unwrap_or(Capabilities::NONE),
        user_limited: spec.user_limited.unwrap_or(false),
    };
    Ok(Namespace {
        pattern,
        history_size,
        history_ttl,
        rule,
        presence: spec.presence,
        presence_threshold: spec.presence_threshold,
    })
}

/// Parses a TTL: positive, at most [`MAX_HISTORY_TTL`]; text is digits with an optional
/// `s`, `m` or `h` unit.
pub fn parse_ttl(value: &TtlValue) -> Result<Duration, String> {
    let secs = match value {
        TtlValue::Seconds(s) => *s,
        TtlValue::Text(text) => {
            let t = text.trim();
            let (digits, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
                Some((i, _)) => (&t[..i], &t[i..]),
                None => (t, "s"),
            };
            let scale = match unit {
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(format!("{text:?} has an unknown unit (use s, m or h)")),
            };
            let n: f64 = digits.trim().parse().map_err(|_| {
                format!("{text:?} is not a duration like \"90s\", \"10m\" or \"1h\"")
            })?;
            n * scale
        }
    };
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!(
            "{secs} s: must be more than zero (turn history off with history_size = 0)"
        ));
    }
    let ttl = Duration::try_from_secs_f64(secs).map_err(|_| format!("{secs} s is out of range"))?;
    if ttl > MAX_HISTORY_TTL {
        return Err(format!("{secs} s is longer than the 7-day maximum"));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: RoomOptions = RoomOptions {
        history: HistoryOptions {
            size: 100,
            ttl: Duration::from_secs(600),
        },
        presence: PresenceOptions {
            mode: PresenceMode::Auto,
            threshold: 64,
        },
    };

    fn parse(text: &str) -> Result<Namespaces, NamespaceError> {
        let table: toml::Table = text.parse().expect("test TOML parses");
        Namespaces::from_toml(DEFAULTS, &table)
    }

    #[test]
    fn permissions_follow_the_namespaces_and_a_silent_one_stays_open() {
        use wsfleet_worker::auth::capability::Capability;
        let ns = parse(
            r#"
            [[namespace]]
            pattern = "dm:*"
            authenticated = ["join", "publish"]
            user_limited = true
            [[namespace]]
            pattern = "live:*"
            history_size = 1
            [[namespace]]
            pattern = "*"
            anonymous = ["join"]
            granted = ["publish"]
            "#,
        )
        .unwrap();
        let rules = ns.permissions().rules;
        assert_eq!(rules.len(), 3, "one rule per namespace, in file order");
        assert_eq!(rules[0].pattern.to_string(), "dm:*");
        assert!(rules[0].user_limited && rules[0].anonymous == Capabilities::NONE);
        assert!(rules[0].authenticated.contains(Capability::Publish));
        assert_eq!(
            rules[1].anonymous,
            Capabilities::ALL,
            "no permission keys: open"
        );
        assert!(!rules[1].user_limited);
        assert!(rules[2].anonymous.contains(Capability::Join));
        assert!(!rules[2].anonymous.contains(Capability::Publish));
        assert!(rules[2].granted.contains(Capability::Publish));

        let err = parse("[[namespace]]\npattern = \"a\"\nanonymous = [\"fly\"]\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("namespace[0]") && text.contains("fly"),
            "{text}"
        );
    }

    #[test]
    fn first_match_wins_and_unset_keys_inherit_defaults() {
        let ns = parse(
            r#"
            [[namespace]]
            pattern = "chat:vip"
            history_size = 1000
            [[namespace]]
            pattern = "chat:*"
            history_ttl = "1h"
            [[namespace]]
            pattern = "tick:*"
            history_size = 0
            "#,
        )
        .unwrap();
        let vip = ns.lookup("chat:vip").history;
        assert_eq!((vip.size, vip.ttl), (1000, Duration::from_secs(600)));
        let chat = ns.lookup("chat:lobby").history;
        assert_eq!((chat.size, chat.ttl), (100, Duration::from_secs(3600)));
        assert!(!ns.lookup("tick:btc").history.enabled());
        assert_eq!(ns.lookup("other"), DEFAULTS);
        assert_eq!(
            ns.lookup("chat:vipx").history.ttl,
            Duration::from_secs(3600),
            "exact is exact"
        );
    }

    #[test]
    fn presence_mode_and_threshold_by_pattern() {
        let ns = parse(
            r#"
            [[namespace]]
            pattern = "live:*"
            presence_threshold = 0
            [[namespace]]
            pattern = "tick:*"
            presence = "off"
            history_size = 1
            "#,
        )
        .unwrap();
        let live = ns.lookup("live:x").presence;
        assert_eq!((live.mode, live.threshold), (PresenceMode::Auto, 0));
        let tick = ns.lookup("tick:x");
        assert_eq!(tick.presence.mode, PresenceMode::Off);
        assert_eq!(tick.presence.threshold, 64, "unset keys inherit");
        assert_eq!(tick.history.size, 1);
        assert_eq!(ns.lookup("chat").presence, DEFAULTS.presence);
        let err = parse("[[namespace]]\npattern = \"a\"\npresence = \"loud\"").unwrap_err();
        assert!(
            matches!(err, NamespaceError::Parse { index: 0, .. })
                && err.to_string().contains("presence"),
            "{err}"
        );
        assert!(parse("[[namespace]]\npattern = \"a\"\npresence_threshold = -1").is_err());
    }

    #[test]
    fn star_matches_every_room_and_absent_key_means_defaults() {
        let ns = parse("[[namespace]]\npattern = \"*\"\nhistory_size = 5").unwrap();
        assert_eq!(ns.lookup("").history.size, 5);
        assert_eq!(ns.lookup("anything").history.size, 5);
        assert_eq!(parse("workers = 2").unwrap(), Namespaces::new(DEFAULTS));
    }

    #[test]
    fn a_namespace_hidden_by_an_earlier_one_is_refused() {
        let err = parse("[[namespace]]\npattern = \"*\"\n[[namespace]]\npattern = \"chat:*\"")
            .unwrap_err();
        assert!(
            matches!(
                err,
                NamespaceError::Shadowed {
                    index: 1,
                    earlier: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("move the narrower one up"));
        let dup =
            parse("[[namespace]]\npattern = \"a\"\n[[namespace]]\npattern = \"a\"").unwrap_err();
        assert!(matches!(dup, NamespaceError::Shadowed { index: 1, .. }));
        // An exact room before a prefix that contains it is fine (narrow first).
        parse("[[namespace]]\npattern = \"chat:x\"\n[[namespace]]\npattern = \"chat:*\"").unwrap();
        parse("[[namespace]]\npattern = \"chat\"\n[[namespace]]\npattern = \"chat*\"").unwrap();
    }

    #[test]
    fn a_bad_pattern_says_why() {
        let long = "x".repeat(MAX_ROOM_BYTES + 2);
        for (pattern, why) in [
            ("", "is empty (use \"*\" for every room)"),
            ("a*b", "may only have `*` at its end (prefix match)"),
            (long.as_str(), "is longer than 129 bytes"),
        ] {
            let err = parse(&format!("[[namespace]]\npattern = {pattern:?}")).unwrap_err();
            assert!(
                err.to_string().ends_with(&format!("{pattern:?} {why}")),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("pattern = \"\"", "namespace[0].pattern"),
            ("pattern = \"a*b\"", "namespace[0].pattern"),
            ("pattern = \"*a\"", "namespace[0].pattern"),
            (
                "pattern = \"a\"\nhistory_size = -1",
                "namespace[0].history_size",
            ),
            (
                "pattern = \"a\"\nhistory_size = 99999999",
                "namespace[0].history_size",
            ),
            (
                "pattern = \"a\"\nhistory_ttl = 0",
                "namespace[0].history_ttl",
            ),
            (
                "pattern = \"a\"\nhistory_ttl = -5",
                "namespace[0].history_ttl",
            ),
            (
                "pattern = \"a\"\nhistory_ttl = \"0m\"",
                "namespace[0].history_ttl",
            ),
            (
                "pattern = \"a\"\nhistory_ttl = \"10 days\"",
                "namespace[0].history_ttl",
            ),
            (
                "pattern = \"a\"\nhistory_ttl = \"200h\"",
                "namespace[0].history_ttl",
            ),
        ];
        for (body, key) in cases {
            let text = format!("[[namespace]]\n{body}");
            match parse(&text) {
                Err(e) if e.to_string().starts_with(key) => {}
                other => panic!("{body:?}: expected an error naming {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_and_wrong_shapes_are_refused_with_the_index() {
        let err = parse(
            "[[namespace]]\npattern = \"a\"\n[[namespace]]\npattern = \"b\"\nhistroy_size = 1",
        )
        .unwrap_err();
        assert!(
            matches!(err, NamespaceError::Parse { index: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("histroy_size"), "{err}");
        let err = parse("namespace = 3").unwrap_err();
        assert_eq!(
            err,
            NamespaceError::NotArray {
                found: "integer".into()
            }
        );
        let err = parse("[[namespace]]\nhistory_size = 1").unwrap_err();
        assert!(err.to_string().contains("pattern"), "{err}");
    }

    #[test]
    fn ttl_spellings() {
        let t = |s: &str| parse_ttl(&TtlValue::Text(s.into()));
        assert_eq!(t("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(t("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(t("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(t("45"), Ok(Duration::from_secs(45)));
        assert_eq!(t(" 2 m "), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse_ttl(&TtlValue::Seconds(1.5)),
            Ok(Duration::from_millis(1500))
        );
        assert!(t("m").is_err());
        assert!(t("1d").is_err());
        assert!(parse_ttl(&TtlValue::Seconds(f64::NAN)).is_err());
        assert!(parse_ttl(&TtlValue::Seconds(f64::INFINITY)).is_err());
    }
}
