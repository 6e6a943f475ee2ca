//! The auth part of the settings the master sends a worker ([`AuthSettings`], inside
//! `WorkerSettings`): the mode, the algorithm and the key's bytes (read by the master
//! from a file or an environment variable, never from a flag value), audience, issuer,
//! clock skew and refresh grace. The worker builds its [`Auth`] from them at start.
//!
//! The master reads the key and checks it by building the same [`Auth`] when it loads
//! its configuration (at start and on every reload), so a bad key stops the start or the
//! reload with a clear error instead of every worker failing.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::source::{Auth, AuthMode};
use super::token::{KeyError, Verifier, VerifyOptions};
use crate::ipc::defaults;

/// Which signature algorithm tokens use (exactly one is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// HMAC-SHA256 with a shared secret.
    #[default]
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256; the key is a public key PEM.
    Rs256,
    /// ECDSA P-256 with SHA-256; the key is a public key PEM.
    Es256,
}

impl Algorithm {
    /// How the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "hs256",
            Self::Rs256 => "rs256",
            Self::Es256 => "es256",
        }
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hs256" => Ok(Self::Hs256),
            "rs256" => Ok(Self::Rs256),
            "es256" => Ok(Self::Es256),
            _ => Err(format!(
                "token algorithm {s:?} is not one of hs256, rs256, es256"
            )),
        }
    }
}

/// Key bytes (an HS256 secret or a public key PEM): kept out of `Debug` output, so logs
/// of the settings never show a secret.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyBytes(pub Vec<u8>);

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyBytes({} bytes)", self.0.len())
    }
}

/// Everything a worker needs to verify connection tokens and run their expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthSettings {
    /// off, optional or required.
    pub mode: AuthMode,
    /// The one algorithm tokens must use.
    pub algorithm: Algorithm,
    /// The secret (HS256) or public key PEM (RS256/ES256); empty when `mode` is off.
    pub key: KeyBytes,
    /// Accepted `aud` values (empty: a token with `aud` is refused).
    pub audience: Vec<String>,
    /// Accepted `iss` values (empty: not checked).
    pub issuer: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf` at the upgrade, in seconds.
    pub leeway_secs: u64,
    /// Seconds after `exp` a connection has to send a fresh token before it is closed.
    pub grace_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mode: AuthMode::Off,
            algorithm: Algorithm::Hs256,
            key: KeyBytes::default(),
            audience: Vec::new(),
            issuer: Vec::new(),
            leeway_secs: defaults::AUTH_LEEWAY_SECS,
            grace_secs: defaults::AUTH_REFRESH_GRACE_SECS,
        }
    }
}

impl AuthSettings {
    /// The worker's policy: the verifier for the configured key (none when off).
    pub fn build(&self) -> Result<Auth, KeyError> {
        if self.mode == AuthMode::Off {
            return Ok(Auth::Off);
        }
        let options = VerifyOptions {
            leeway: Duration::from_secs(self.leeway_secs),
            audience: self.audience.clone(),
            issuer: self.issuer.clone(),
        };
        let key = &self.key.0;
        let verifier = match self.algorithm {
            Algorithm::Hs256 => Verifier::hs256(key, &options)?,
            Algorithm::Rs256 => Verifier::rs256(key, &options)?,
            Algorithm::Es256 => Verifier::es256(key, &options)?,
        };
        Ok(match self.mode {
            AuthMode::Required => Auth::Required(verifier),
            _ => Auth::Optional(verifier),
        })
    }

    /// How long after `exp` a refresh is still accepted.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_needs_no_key_and_the_others_check_it() {
        assert!(matches!(AuthSettings::default().build(), Ok(Auth::Off)));
        let mut s = AuthSettings {
            mode: AuthMode::Required,
            key: KeyBytes(b"short".to_vec()),
            ..AuthSettings::default()
        };
        assert!(matches!(s.build(), Err(KeyError::WeakSecret(5))));
        s.key = KeyBytes(vec![b'k'; 32]);
        assert!(matches!(s.build(), Ok(Auth::Required(_))));
        s.mode = AuthMode::Optional;
        assert!(matches!(s.build(), Ok(Auth::Optional(_))));
        s.algorithm = Algorithm::Rs256;
        assert!(matches!(s.build(), Err(KeyError::BadPem { .. })));
        assert!(
            !format!("{s:?}").contains("kkkk"),
            "the key stays out of Debug"
        );
    }

    #[test]
    fn algorithm_names() {
        assert_eq!("RS256".parse(), Ok(Algorithm::Rs256));
        assert!("none".parse::<Algorithm>().unwrap_err().contains("hs256"));
    }
}
