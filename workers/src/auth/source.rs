//! Where the upgrade request carries its token, and what the auth mode does with it.
//!
//! A token is taken from an `Authorization: Bearer TOKEN` header or from the upgrade URL's
//! query, `?token=TOKEN` (percent-decoded; browsers cannot set headers on a WebSocket).
//! **The header wins** when both are present: a header is set deliberately by the client's
//! code, while a URL may have been copied with someone else's token in it. A repeated
//! `token=` or an empty one is malformed rather than guessed at. An `Authorization`
//! header with another scheme (`Basic …`, for a proxy) is not a token and is ignored.
//!
//! | mode | no token | a token |
//! |------|----------|---------|
//! | `off` (default) | anonymous | ignored, anonymous (nothing is verified) |
//! | `optional` | anonymous | verified: the user, or refused (401) |
//! | `required` | refused (401, `missing`) | verified: the user, or refused (401) |
//!
//! A bad token is never downgraded to anonymous: a client that meant to authenticate
//! learns at once that it did not.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::claims::Identity;
use super::token::{TokenError, Verifier};

/// `--auth off|optional|required` as the configuration spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No tokens: every connection is anonymous (today's behaviour).
    #[default]
    Off,
    /// A token is verified if given; without one the connection is anonymous.
    Optional,
    /// Every connection needs a valid token.
    Required,
}

impl AuthMode {
    /// How the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Self::Off),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            other => Err(format!(
                "auth mode {other:?} is not one of off, optional, required"
            )),
        }
    }
}

/// The worker's auth policy: a mode, with the verifier the modes that verify need.
#[derive(Debug)]
pub enum Auth {
    /// See [`AuthMode::Off`].
    Off,
    /// See [`AuthMode::Optional`].
    Optional(Verifier),
    /// See [`AuthMode::Required`].
    Required(Verifier),
}

impl Auth {
    /// Who the connection is, given the token found in its request (if any).
    pub fn identify(&self, token: Option<&str>) -> Result<Identity, TokenError> {
        let (verifier, token) = match (self, token) {
            (Self::Off, _) | (Self::Optional(_), None) => return Ok(Identity::Anonymous),
            (Self::Required(_), None) => return Err(TokenError::Missing),
            (Self::Optional(v) | Self::Required(v), Some(t)) => (v, t),
        };
        Ok(Identity::User(Box::new(verifier.verify(token)?)))
    }

    /// Who the client of an upgrade request is. With `off` the request is not even looked
    /// at, so a stray or empty `?token=` cannot refuse anyone.
    pub fn identify_request<B>(&self, request: &hyper::Request<B>) -> Result<Identity, TokenError> {
        if let Self::Off = self {
            return Ok(Identity::Anonymous);
        }
        self.identify(token_from_request(request)?.as_deref())
    }
}

/// The token of an upgrade request: its `Authorization` header, else its query's `token`.
pub fn token_from_request<B>(request: &hyper::Request<B>) -> Result<Option<String>, TokenError> {
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    find_token(request.uri().query(), authorization)
}

/// The token given by an `Authorization` header value or a URL query string (without `?`).
pub fn find_token(
    query: Option<&str>,
    authorization: Option<&[u8]>,
) -> Result<Option<String>, TokenError> {
    if let Some(token) = authorization.map(bearer).transpose()?.flatten() {
        return Ok(Some(token));
    }
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "token" {
            if found.is_some() || value.is_empty() {
                return Err(TokenError::Malformed);
            }
            found = Some(value.into_owned());
        }
    }
    Ok(found)
}

/// The token of a `Bearer` header value; `None` for another scheme.
fn bearer(value: &[u8]) -> Result<Option<String>, TokenError> {
    let value = std::str::from_utf8(value).map_err(|_| TokenError::Malformed)?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(TokenError::Malformed);
    }
    Ok(Some(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::VerifyOptions;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(sub: &str) -> String {
        let claims =
            serde_json::json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 60});
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET).unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::hs256(SECRET, &VerifyOptions::default()).unwrap()
    }

    #[test]
    fn from_query_percent_decoded() {
        assert_eq!(
            find_token(Some("token=a.b.c"), None),
            Ok(Some("a.b.c".into()))
        );
        assert_eq!(
            find_token(Some("room=x&token=a%2Eb.c%5F&y=1"), None),
            Ok(Some("a.b.c_".into()))
        );
        assert_eq!(find_token(Some("room=x"), None), Ok(None));
        assert_eq!(find_token(None, None), Ok(None));
        assert_eq!(find_token(Some("token="), None), Err(TokenError::Malformed));
        assert_eq!(
            find_token(Some("token=a&token=b"), None),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn from_header_which_wins() {
        assert_eq!(
            find_token(None, Some(b"Bearer a.b.c")),
            Ok(Some("a.b.c".into()))
        );
        assert_eq!(
            find_token(None, Some(b"bearer  a.b.c ")),
            Ok(Some("a.b.c".into()))
        );
        assert_eq!(
            find_token(Some("token=query"), Some(b"Bearer header")),
            Ok(Some("header".into()))
        );
        // Another scheme is not ours: the query's token is used.
        assert_eq!(
            find_token(Some("token=query"), Some(b"Basic dXNlcjpwdw==")),
            Ok(Some("query".into()))
        );
        assert_eq!(
            find_token(None, Some(b"Bearer")),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            find_token(None, Some(b"Bearer a b")),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            find_token(None, Some(b"Bearer \xff")),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn from_a_hyper_request() {
        let req = hyper::Request::builder()
            .uri("/ws?token=q.q.q")
            .header("authorization", "Bearer h.h.h")
            .body(())
            .unwrap();
        assert_eq!(token_from_request(&req), Ok(Some("h.h.h".into())));
        let req = hyper::Request::builder()
            .uri("/ws?token=q.q.q")
            .body(())
            .unwrap();
        assert_eq!(token_from_request(&req), Ok(Some("q.q.q".into())));
    }

    #[test]
    fn off_never_reads_the_request() {
        let req = hyper::Request::builder()
            .uri("/ws?token=&token=")
            .body(())
            .unwrap();
        assert!(matches!(
            Auth::Off.identify_request(&req),
            Ok(Identity::Anonymous)
        ));
        assert_eq!(
            Auth::Optional(verifier())
                .identify_request(&req)
                .unwrap_err(),
            TokenError::Malformed
        );
    }

    #[test]
    fn modes() {
        assert_eq!("optional".parse(), Ok(AuthMode::Optional));
        assert!(
            "on".parse::<AuthMode>()
                .unwrap_err()
                .contains("off, optional, required")
        );
        assert_eq!(AuthMode::default(), AuthMode::Off);
        let good = token("42");
        let off = Auth::Off;
        assert!(matches!(off.identify(None), Ok(Identity::Anonymous)));
        assert!(matches!(
            off.identify(Some("junk")),
            Ok(Identity::Anonymous)
        ));
        let optional = Auth::Optional(verifier());
        assert!(matches!(optional.identify(None), Ok(Identity::Anonymous)));
        assert_eq!(
            optional.identify(Some(&good)).unwrap().user_id(),
            Some("42")
        );
        assert_eq!(
            optional.identify(Some("junk")).unwrap_err(),
            TokenError::Malformed
        );
        let required = Auth::Required(verifier());
        assert_eq!(required.identify(None).unwrap_err(), TokenError::Missing);
        assert_eq!(
            required.identify(Some(&good)).unwrap().user_id(),
            Some("42")
        );
        assert_eq!(
            required.identify(Some("junk")).unwrap_err(),
            TokenError::Malformed
        );
    }
}
