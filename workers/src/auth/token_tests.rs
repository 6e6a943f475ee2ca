//! Tests of [`super::Verifier`]: every refusal reason, each algorithm, and the cost of a
//! verification (an ignored test that prints ns/verify).

use std::time::Instant;

use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("testdata/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("testdata/ec_public.pem");
const EC_OTHER_PRIVATE: &[u8] = include_bytes!("testdata/ec_other_private.pem");

fn now() -> u64 {
    get_current_timestamp()
}

fn claims(exp_offset: i64) -> Value {
    json!({"sub": "42", "exp": now().saturating_add_signed(exp_offset), "info": {"name": "Ada"}})
}

fn hs(claims: &Value, secret: &[u8]) -> String {
    let key = EncodingKey::from_secret(secret).unwrap();
    encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

fn rs(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

fn es(claims: &Value, private: &[u8]) -> String {
    let key = EncodingKey::from_ec_pem(private).unwrap();
    encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
}

fn hs_verifier(options: &VerifyOptions) -> Verifier {
    Verifier::hs256(SECRET, options).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn valid_tokens_of_each_algorithm() {
    let opts = VerifyOptions::default();
    let c = hs_verifier(&opts).verify(&hs(&claims(60), SECRET)).unwrap();
    assert_eq!(
        (c.sub.as_str(), c.info.unwrap().get()),
        ("42", r#"{"name":"Ada"}"#)
    );
    let rsa = Verifier::rs256(RSA_PUBLIC, &opts).unwrap();
    assert_eq!(rsa.verify(&rs(&claims(60))).unwrap().sub, "42");
    let ec = Verifier::es256(EC_PUBLIC, &opts).unwrap();
    assert_eq!(ec.verify(&es(&claims(60), EC_PRIVATE)).unwrap().sub, "42");
}

#[test]
fn expiry_with_leeway() {
    let v = hs_verifier(&VerifyOptions::default());
    // 10 s past exp is within the default 30 s leeway; 100 s past is not.
    assert!(v.verify(&hs(&claims(-10), SECRET)).is_ok());
    assert_eq!(
        v.verify(&hs(&claims(-100), SECRET)),
        Err(TokenError::Expired)
    );
    let strict = hs_verifier(&VerifyOptions {
        leeway: Duration::ZERO,
        ..VerifyOptions::default()
    });
    assert_eq!(
        strict.verify(&hs(&claims(-10), SECRET)),
        Err(TokenError::Expired)
    );
    assert_eq!(TokenError::Expired.reason(), "expired");
}

#[test]
fn exp_is_required_and_nbf_honoured() {
    let v = hs_verifier(&VerifyOptions::default());
    let no_exp = hs(&json!({"sub": "42"}), SECRET);
    assert_eq!(v.verify(&no_exp).unwrap_err().reason(), "bad_claims");
    let future = json!({"sub": "42", "exp": now() + 600, "nbf": now() + 300});
    assert_eq!(v.verify(&hs(&future, SECRET)), Err(TokenError::NotYetValid));
    let soon = json!({"sub": "42", "exp": now() + 600, "nbf": now() + 10});
    assert!(
        v.verify(&hs(&soon, SECRET)).is_ok(),
        "nbf within the leeway"
    );
}

#[test]
fn wrong_signature() {
    let v = hs_verifier(&VerifyOptions::default());
    let other = hs(&claims(60), b"another secret that is long enough!!");
    assert_eq!(v.verify(&other), Err(TokenError::BadSignature));
    let ec = Verifier::es256(EC_PUBLIC, &VerifyOptions::default()).unwrap();
    assert_eq!(
        ec.verify(&es(&claims(60), EC_OTHER_PRIVATE)),
        Err(TokenError::BadSignature)
    );
    // Claims changed after signing (sub 42 → 1) keep the old signature.
    let token = hs(&claims(60), SECRET);
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(json!({"sub": "1", "exp": now() + 60})
        .to_string()
        .as_bytes());
    parts[1] = &forged;
    let err = v.verify(&parts.join(".")).unwrap_err();
    assert_eq!(err.reason(), "bad_signature");
}

#[test]
fn alg_none_is_refused() {
    let v = hs_verifier(&VerifyOptions::default());
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64(claims(60).to_string().as_bytes());
    for token in [format!("{header}.{body}."), format!("{header}.{body}.c2ln")] {
        let err = v.verify(&token).unwrap_err();
        assert_eq!(err.reason(), "bad_algorithm", "{token}");
    }
}

#[test]
fn algorithm_confusion_is_refused() {
    // The classic attack: an HS256 token whose secret is the RSA public key's PEM text.
    let forged = hs(&claims(60), RSA_PUBLIC);
    let rsa = Verifier::rs256(RSA_PUBLIC, &VerifyOptions::default()).unwrap();
    assert_eq!(
        rsa.verify(&forged),
        Err(TokenError::BadAlgorithm {
            found: "HS256".into(),
            expected: "RS256"
        })
    );
    let ec = Verifier::es256(EC_PUBLIC, &VerifyOptions::default()).unwrap();
    assert_eq!(
        ec.verify(&hs(&claims(60), EC_PUBLIC)).unwrap_err().reason(),
        "bad_algorithm"
    );
    assert_eq!(
        ec.verify(&rs(&claims(60))).unwrap_err().reason(),
        "bad_algorithm"
    );
    let hs = hs_verifier(&VerifyOptions::default());
    assert_eq!(
        hs.verify(&rs(&claims(60))).unwrap_err().reason(),
        "bad_algorithm"
    );
    // Same family, other size: only the key's own algorithm is accepted.
    let key = EncodingKey::from_secret(SECRET).unwrap();
    let hs512 = encode(&Header::new(Algorithm::HS512), &claims(60), &key).unwrap();
    assert_eq!(hs.verify(&hs512).unwrap_err().reason(), "bad_algorithm");
}

#[test]
fn audience_and_issuer() {
    let opts = VerifyOptions {
        audience: vec!["wsfleet".into()],
        issuer: vec!["https://app.example".into()],
        ..VerifyOptions::default()
    };
    let v = hs_verifier(&opts);
    let with = |aud: Value, iss: Value| {
        let mut c = claims(60);
        if !aud.is_null() {
            c["aud"] = aud;
        }
        if !iss.is_null() {
            c["iss"] = iss;
        }
        v.verify(&hs(&c, SECRET))
    };
    let iss = || json!("https://app.example");
    assert!(with(json!("wsfleet"), iss()).is_ok());
    assert!(with(json!(["other", "wsfleet"]), iss()).is_ok());
    assert_eq!(with(json!("other"), iss()), Err(TokenError::BadAudience));
    assert_eq!(with(Value::Null, iss()), Err(TokenError::BadAudience));
    assert_eq!(
        with(json!("wsfleet"), json!("https://evil")),
        Err(TokenError::BadIssuer)
    );
    assert_eq!(
        with(json!("wsfleet"), Value::Null),
        Err(TokenError::BadIssuer)
    );
    // No audience configured: a token meant for another audience is not ours.
    let mut c = claims(60);
    c["aud"] = json!("other");
    let err = hs_verifier(&VerifyOptions::default()).verify(&hs(&c, SECRET));
    assert_eq!(err, Err(TokenError::BadAudience));
}

#[test]
fn malformed_and_missing() {
    let v = hs_verifier(&VerifyOptions::default());
    assert_eq!(v.verify(""), Err(TokenError::Missing));
    let good = hs(&claims(60), SECRET);
    let too_long = format!("{good}{}", "A".repeat(MAX_TOKEN_BYTES));
    for token in [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        &format!("{}.e30.sig", b64(b"not json")),
        &format!("{}.e30.sig", b64(br#"{"typ":"JWT"}"#)),
        &too_long,
    ] {
        assert_eq!(v.verify(token), Err(TokenError::Malformed), "{token}");
    }
    // Correctly signed, but the payload is not base64url JSON.
    let header = good.split('.').next().unwrap();
    let key = EncodingKey::from_secret(SECRET).unwrap();
    for payload in ["%%%".to_owned(), b64(b"not json"), b64(b"[1,2]")] {
        let message = format!("{header}.{payload}");
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        let token = format!("{message}.{sig}");
        let reason = v.verify(&token).unwrap_err().reason();
        assert_eq!(reason, "malformed", "{payload}");
    }
    assert_eq!(TokenError::Missing.reason(), "missing");
}

#[test]
fn bad_claims_after_a_good_signature() {
    let v = hs_verifier(&VerifyOptions::default());
    let no_sub = hs(&json!({"exp": now() + 60}), SECRET);
    assert_eq!(
        v.verify(&no_sub),
        Err(TokenError::BadClaims(ClaimsError::NoSubject))
    );
    assert_eq!(v.verify(&no_sub).unwrap_err().reason(), "bad_claims");
}

#[test]
fn key_loading_errors_say_what_to_do() {
    let weak = Verifier::hs256(b"short", &VerifyOptions::default()).unwrap_err();
    assert!(weak.to_string().contains("openssl rand"), "{weak}");
    let pem = Verifier::rs256(b"not a pem", &VerifyOptions::default()).unwrap_err();
    assert!(pem.to_string().contains("PUBLIC KEY"), "{pem}");
    assert!(Verifier::es256(RSA_PUBLIC, &VerifyOptions::default()).is_err());
    let missing = load_secret(&SecretSource::File("/nonexistent/wsfleet.secret".into()));
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/wsfleet.secret")
    );
    let unset = load_secret(&SecretSource::Env("WSFLEET_TEST_SURELY_UNSET_VAR".into()));
    assert!(
        unset
            .unwrap_err()
            .to_string()
            .contains("WSFLEET_TEST_SURELY_UNSET_VAR")
    );
}

#[test]
fn secret_file_loses_its_trailing_newline() {
    let dir = std::env::temp_dir().join(format!("wsfleet-h9-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secret");
    std::fs::write(&path, [SECRET, b"\n"].concat()).unwrap();
    let secret = load_secret(&SecretSource::File(path.clone())).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(secret, SECRET);
    assert!(
        hs_verifier(&VerifyOptions::default())
            .verify(&hs(&claims(60), &secret))
            .is_ok()
    );
}

#[test]
fn load_from_a_key_spec() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/auth/testdata");
    let opts = VerifyOptions::default();
    let rsa = Verifier::load(&KeySpec::Rs256(dir.join("rsa_public.pem")), &opts).unwrap();
    assert_eq!(rsa.algorithm_name(), "RS256");
    assert!(rsa.verify(&rs(&claims(60))).is_ok());
    let ec = Verifier::load(&KeySpec::Es256(dir.join("ec_public.pem")), &opts).unwrap();
    assert!(ec.verify(&es(&claims(60), EC_PRIVATE)).is_ok());
    let wrong = Verifier::load(&KeySpec::Es256(dir.join("rsa_public.pem")), &opts);
    assert!(wrong.unwrap_err().to_string().contains("ES256"));
    let missing = Verifier::load(&KeySpec::Rs256(dir.join("nope.pem")), &opts);
    assert!(matches!(missing, Err(KeyError::ReadFile { .. })));
}

/// Verification cost per token; run with
/// `cargo test -p wsfleet-worker --release --lib auth::token::tests::verify_cost -- --ignored --nocapture`.
/// Prints wall time and this thread's CPU time (steadier on a loaded machine).
#[test]
#[ignore = "a measurement, not a check: prints ns per verification"]
fn verify_cost() {
    use nix::time::{ClockId, clock_gettime};
    let cpu_ns = || {
        let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
        t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128
    };
    let opts = VerifyOptions::default();
    let cases = [
        ("HS256", hs_verifier(&opts), hs(&claims(600), SECRET)),
        (
            "RS256",
            Verifier::rs256(RSA_PUBLIC, &opts).unwrap(),
            rs(&claims(600)),
        ),
        (
            "ES256",
            Verifier::es256(EC_PUBLIC, &opts).unwrap(),
            es(&claims(600), EC_PRIVATE),
        ),
    ];
    for (name, verifier, token) in cases {
        let rounds: u32 = if name == "HS256" { 20_000 } else { 1_000 };
        verifier.verify(&token).unwrap();
        let (start, cpu_start) = (Instant::now(), cpu_ns());
        for _ in 0..rounds {
            std::hint::black_box(verifier.verify(std::hint::black_box(&token)).unwrap());
        }
        let wall = start.elapsed().as_nanos() / u128::from(rounds);
        let cpu = (cpu_ns() - cpu_start) / i128::from(rounds);
        println!(
            "{name}: {wall} ns/verify wall, {cpu} ns/verify CPU ({rounds} rounds, token {} bytes)",
            token.len()
        );
    }
}
