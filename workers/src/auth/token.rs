//! Connection-token verification: one [`Verifier`] per worker, built from the configured
//! key (HS256 secret, or an RS256/ES256 public key PEM), checks a JWT's algorithm,
//! signature, `exp` (with a leeway), `nbf`, `aud` and `iss`, then its [`Claims`].
//!
//! Exactly one algorithm is accepted, the key's: `alg: none`, another family (an HS256
//! token against an RS256 key: the classic confusion) or another size are refused with
//! [`TokenError::BadAlgorithm`] before any cryptography runs. `exp` is required. A token
//! carrying `aud` is refused unless an audience is configured and matches (RFC 7519 §4.1.3).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::claims::{Claims, ClaimsError};

/// Clock skew allowed on `exp` and `nbf` unless configured otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(crate::ipc::defaults::AUTH_LEEWAY_SECS);

/// Longest token accepted, in bytes: refused as malformed before any decoding work.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What the configuration asks of every token besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Clock skew allowed on `exp` and `nbf` (whole seconds count).
    pub leeway: Duration,
    /// Accepted `aud` values; empty = no audience configured (a token with `aud` is refused).
    pub audience: Vec<String>,
    /// Accepted `iss` values; empty = `iss` not checked.
    pub issuer: Vec<String>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            leeway: DEFAULT_LEEWAY,
            audience: Vec::new(),
            issuer: Vec::new(),
        }
    }
}

/// Why a token was refused. [`TokenError::reason`] is what the client may see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `auth = required` and the request carried no token.
    #[error("no token: pass one as ?token= or an `Authorization: Bearer` header")]
    Missing,
    /// Not three base64url parts of JSON, or over [`MAX_TOKEN_BYTES`].
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// `exp` is past, beyond the leeway.
    #[error("the token has expired; mint a fresh one")]
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    #[error("the token is not valid yet (nbf); check the minting server's clock")]
    NotYetValid,
    /// The signature does not match the configured key.
    #[error("the token's signature does not match the configured key")]
    BadSignature,
    /// `alg` is not the one the configured key is for (including `none`).
    #[error("the token's algorithm {found:?} is not the configured {expected}")]
    BadAlgorithm {
        /// The token header's `alg`.
        found: String,
        /// The algorithm of the configured key.
        expected: &'static str,
    },
    /// `aud` missing or not one of the configured audiences (or present when none is).
    #[error("the token's audience (aud) is not one this server accepts")]
    BadAudience,
    /// `iss` missing or not one of the configured issuers.
    #[error("the token's issuer (iss) is not one this server accepts")]
    BadIssuer,
    /// Signed correctly, but the claims are unusable.
    #[error(transparent)]
    BadClaims(#[from] ClaimsError),
}

impl TokenError {
    /// A short stable reason for the response header: it names only what is wrong with
    /// this token, never anything about other connections or rooms.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::BadAlgorithm { .. } => "bad_algorithm",
            Self::BadAudience => "bad_audience",
            Self::BadIssuer => "bad_issuer",
            Self::BadClaims(_) => "bad_claims",
        }
    }

    /// Maps the crate's error after our own header check passed.
    fn from_jwt(err: &jsonwebtoken::errors::Error) -> Self {
        match err.kind() {
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidAudience => Self::BadAudience,
            ErrorKind::InvalidIssuer => Self::BadIssuer,
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => Self::BadAudience,
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => Self::BadIssuer,
            ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
                Self::BadClaims(ClaimsError::Shape(format!(
                    "`{c}` is missing or not a number"
                )))
            }
            _ => Self::Malformed,
        }
    }
}

/// Why the configured key cannot be used (said at start, with what to do).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key or secret file could not be read.
    #[error("cannot read the token key file {path}: {source}")]
    ReadFile {
        /// The file named in the configuration.
        path: std::path::PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The environment variable that should hold the secret is unset or not UTF-8.
    #[error("the environment variable {0} that should hold the token secret is unset or not UTF-8")]
    EnvMissing(String),
    /// An HS256 secret shorter than [`MIN_SECRET_BYTES`].
    #[error(
        "the HS256 secret is {0} bytes; use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)"
    )]
    WeakSecret(usize),
    /// The PEM is not a public key of the expected kind.
    #[error("the {expected} public key is not usable: {detail}; give a PEM `PUBLIC KEY` file")]
    BadPem {
        /// `RS256` or `ES256`.
        expected: &'static str,
        /// What the parser said.
        detail: String,
    },
}

/// Shortest HS256 secret accepted: the hash's output size, as RFC 7518 §3.2 requires.
pub const MIN_SECRET_BYTES: usize = 32;

/// Where an HS256 secret comes from: never a flag value, which `ps` would show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's contents, trailing whitespace (an editor's newline) removed.
    File(std::path::PathBuf),
    /// An environment variable's value, by name.
    Env(String),
}

/// The configured key: which algorithm, and where its key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// A shared secret, from a file or an environment variable.
    Hs256(SecretSource),
    /// An RSA public key PEM file.
    Rs256(std::path::PathBuf),
    /// A P-256 public key PEM file.
    Es256(std::path::PathBuf),
}

/// Reads an HS256 secret from a file or an environment variable.
pub fn load_secret(source: &SecretSource) -> Result<Vec<u8>, KeyError> {
    let mut bytes = match source {
        SecretSource::File(path) => read_file(path)?,
        SecretSource::Env(name) => std::env::var(name)
            .map_err(|_| KeyError::EnvMissing(name.clone()))?
            .into_bytes(),
    };
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    Ok(bytes)
}

/// Reads a public key PEM file.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

/// Checks tokens against one key; built once, shared by every handshake of a worker.
pub struct Verifier {
    /// The configured key.
    key: DecodingKey,
    /// The one algorithm accepted (the key's).
    algorithm: Algorithm,
    /// The crate's checks: algorithm, `exp`, `nbf`, `aud`, `iss`, leeway.
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The header name of one of the three algorithms a [`Verifier`] is built for.
fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => "HS256",
    }
}

/// The header fields looked at before verifying.
#[derive(Deserialize)]
struct PeekHeader {
    /// The token's claimed algorithm.
    alg: String,
}

impl Verifier {
    /// An HS256 verifier from the shared secret's bytes.
    pub fn hs256(secret: &[u8], options: &VerifyOptions) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::WeakSecret(secret.len()));
        }
        let key = DecodingKey::from_secret(secret).map_err(|_| KeyError::WeakSecret(0))?;
        Ok(Self::new(key, Algorithm::HS256, options))
    }

    /// An RS256 verifier from a PEM `PUBLIC KEY` (or `RSA PUBLIC KEY`).
    pub fn rs256(public_pem: &[u8], options: &VerifyOptions) -> Result<Self, KeyError> {
        Self::from_pem(
            public_pem,
            Algorithm::RS256,
            DecodingKey::from_rsa_pem,
            options,
        )
    }

    /// An ES256 verifier from a PEM P-256 `PUBLIC KEY`.
    pub fn es256(public_pem: &[u8], options: &VerifyOptions) -> Result<Self, KeyError> {
        Self::from_pem(
            public_pem,
            Algorithm::ES256,
            DecodingKey::from_ec_pem,
            options,
        )
    }

    /// The verifier the configuration names, its key read from a file or the environment.
    pub fn load(spec: &KeySpec, options: &VerifyOptions) -> Result<Self, KeyError> {
        match spec {
            KeySpec::Hs256(source) => Self::hs256(&load_secret(source)?, options),
            KeySpec::Rs256(path) => Self::rs256(&read_file(path)?, options),
            KeySpec::Es256(path) => Self::es256(&read_file(path)?, options),
        }
    }

    fn from_pem(
        pem: &[u8],
        algorithm: Algorithm,
        parse: fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>,
        options: &VerifyOptions,
    ) -> Result<Self, KeyError> {
        let key = parse(pem).map_err(|e| KeyError::BadPem {
            expected: algorithm_name(algorithm),
            detail: e.to_string(),
        })?;
        Ok(Self::new(key, algorithm, options))
    }

    fn new(key: DecodingKey, algorithm: Algorithm, options: &VerifyOptions) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = options.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if !options.audience.is_empty() {
            validation.set_audience(&options.audience);
            required.push("aud");
        }
        if !options.issuer.is_empty() {
            validation.set_issuer(&options.issuer);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Self {
            key,
            algorithm,
            validation,
        }
    }

    /// The algorithm name tokens must carry, as in their header.
    pub fn algorithm_name(&self) -> &'static str {
        algorithm_name(self.algorithm)
    }

    /// Verifies `token` against the wall clock and returns its checked claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES || token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let header = token.split('.').next().unwrap_or_default();
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        let header: PeekHeader =
            serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
        let expected = self.algorithm_name();
        if header.alg != expected {
            return Err(TokenError::BadAlgorithm {
                found: header.alg,
                expected,
            });
        }
        let data = jsonwebtoken::decode::<Box<RawValue>>(token, &self.key, &self.validation)
            .map_err(|e| TokenError::from_jwt(&e))?;
        Ok(Claims::from_json(data.claims.get())?)
    }
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
