//! Connection tokens, room permissions, token expiry and connection limits, against the
//! real binary: what a client sees at the upgrade (101, 401 with a reason, 429) and on
//! an open connection (welcome's `user`, `forbidden`, `token_expiring`, `refreshed`,
//! close 4001).

mod common;

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An HS256 token over `claims` signed with `secret`.
fn sign(claims: &Value, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
}

/// A valid token for `sub`, an hour long.
fn token(sub: &str) -> String {
    sign(&json!({"sub": sub, "exp": now() + 3600}), SECRET)
}

/// A token with the given header (base64url JSON) and no valid signature.
fn unsigned(header: &Value, claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", b64(header), b64(claims))
}

/// A directory holding the secret file and `wsfleet.toml` (`toml` plus the auth keys).
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new(toml: &str) -> Self {
        let dir = TempDir::new();
        let secret = dir.0.join("secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let config = format!("auth_key_file = {:?}\n{toml}", secret.display().to_string());
        std::fs::write(dir.0.join("wsfleet.toml"), config).unwrap();
        Self { dir }
    }

    fn config(&self) -> String {
        self.dir.0.join("wsfleet.toml").display().to_string()
    }
}

/// What the server answered an upgrade: 101's welcome, or the refusal's status and
/// reason headers.
enum Upgrade {
    Welcome(Box<Ws>, Value),
    Refused {
        status: u16,
        auth_error: Option<String>,
        limit: Option<String>,
        body: String,
    },
}

/// Opens `/ws` with `token` in the query, or in an `Authorization: Bearer` header.
async fn open(fleet: &Fleet, token: Option<&str>, bearer: bool) -> Upgrade {
    let url = match (token, bearer) {
        (Some(t), false) => fleet.url(&format!("/ws?token={t}")),
        _ => fleet.url("/ws"),
    };
    let mut request = url.into_client_request().unwrap();
    if let (Some(t), true) = (token, bearer) {
        let value = HeaderValue::from_str(&format!("Bearer {t}")).unwrap();
        request.headers_mut().insert("authorization", value);
    }
    let connected = tokio::time::timeout(T, tokio_tungstenite::connect_async(request))
        .await
        .expect("upgrade timed out");
    match connected {
        Ok((mut ws, _)) => {
            let welcome = recv(&mut ws).await;
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            Upgrade::Welcome(Box::new(ws), welcome)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let header = |name: &str| {
                res.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            Upgrade::Refused {
                status: res.status().as_u16(),
                auth_error: header("x-wsfleet-auth-error"),
                limit: header("x-wsfleet-limit"),
                body: String::from_utf8_lossy(res.body().as_deref().unwrap_or_default())
                    .into_owned(),
            }
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// A client that must be welcomed; its welcome's `user` (Null when anonymous).
async fn welcomed(fleet: &Fleet, token: Option<&str>) -> (Ws, Value) {
    match open(fleet, token, false).await {
        Upgrade::Welcome(ws, welcome) => (*ws, welcome["user"].clone()),
        Upgrade::Refused {
            status, auth_error, ..
        } => panic!("refused: {status} {auth_error:?}"),
    }
}

/// The 401 reason for an upgrade with `token`.
async fn auth_refusal(fleet: &Fleet, token: Option<&str>) -> String {
    match open(fleet, token, false).await {
        Upgrade::Refused {
            status: 401,
            auth_error: Some(reason),
            body,
            ..
        } => {
            assert!(!body.contains('{'), "the body reveals nothing: {body}");
            reason
        }
        Upgrade::Refused { status, .. } => panic!("refused with {status}, not 401"),
        Upgrade::Welcome(_, w) => panic!("welcomed: {w}"),
    }
}

#[tokio::test]
async fn tokens_are_verified_at_the_upgrade() {
    let setup = Setup::new("auth = \"required\"\nauth_leeway = 0\nauth_audience = [\"app\"]\n");
    let fleet = Fleet::start(&["--config", &setup.config()]);
    let exp = now() + 3600;
    let good = sign(&json!({"sub":"42","exp":exp,"aud":"app"}), SECRET);
    let (_ws, user) = welcomed(&fleet, Some(&good)).await;
    assert_eq!(user, "42", "a valid token in ?token=");
    let Upgrade::Welcome(_ws, welcome) = open(&fleet, Some(&good), true).await else {
        panic!("a valid Bearer token is refused");
    };
    assert_eq!(welcome["user"], "42");

    let cases = [
        (None, "missing"),
        (Some("not-a-jwt".to_owned()), "malformed"),
        (Some("a.b.c".to_owned()), "malformed"),
        (
            Some(sign(
                &json!({"sub":"42","exp":now() - 60,"aud":"app"}),
                SECRET,
            )),
            "expired",
        ),
        (
            Some(sign(
                &json!({"sub":"42","exp":exp,"aud":"app"}),
                "another-secret-another-secret-32",
            )),
            "bad_signature",
        ),
        (
            Some(unsigned(
                &json!({"alg":"none","typ":"JWT"}),
                &json!({"sub":"42","exp":exp,"aud":"app"}),
            )),
            "bad_algorithm",
        ),
        (
            Some({
                let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
                let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384);
                let claims = json!({"sub":"42","exp":exp,"aud":"app"});
                jsonwebtoken::encode(&header, &claims, &key).unwrap()
            }),
            "bad_algorithm",
        ),
        (
            Some(sign(&json!({"sub":"42","exp":exp,"aud":"other"}), SECRET)),
            "bad_audience",
        ),
        (
            Some(sign(&json!({"sub":"42","exp":exp}), SECRET)),
            "bad_audience",
        ),
        (
            Some(sign(&json!({"exp":exp,"aud":"app"}), SECRET)),
            "bad_claims",
        ),
    ];
    for (token, want) in cases {
        let got = auth_refusal(&fleet, token.as_deref()).await;
        assert_eq!(got, want, "{token:?}");
    }
    let stats = fleet.stats();
    let refused = &stats["total"]["counters"]["rejected_auth"];
    assert_eq!(refused, 10, "refusals are counted: {stats}");
}

#[tokio::test]
async fn rs256_accepts_its_key_and_refuses_an_hs256_token_made_with_the_public_key() {
    let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/workers/src/auth/testdata");
    let public = format!("{testdata}/rsa_public.pem");
    let private = std::fs::read(format!("{testdata}/rsa_private.pem")).unwrap();
    let fleet = Fleet::start(&[
        "--auth",
        "required",
        "--auth-algorithm",
        "rs256",
        "--auth-key-file",
        &public,
    ]);
    let claims = json!({"sub":"ada","exp":now() + 600});
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    let good = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_eq!(welcomed(&fleet, Some(&good)).await.1, "ada");
    let public_bytes = std::fs::read(&public).unwrap();
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public_bytes).unwrap(),
    )
    .unwrap();
    assert_eq!(auth_refusal(&fleet, Some(&confused)).await, "bad_algorithm");
}

#[tokio::test]
async fn off_ignores_tokens_optional_verifies_given_ones() {
    let off = Fleet::start(&[]);
    let (_ws, user) = welcomed(&off, Some("junk")).await;
    assert_eq!(
        user,
        Value::Null,
        "off: a token is ignored, the client is anonymous"
    );

    let setup = Setup::new("auth = \"optional\"\n");
    let optional = Fleet::start(&["--config", &setup.config()]);
    assert_eq!(welcomed(&optional, None).await.1, Value::Null);
    assert_eq!(welcomed(&optional, Some(&token("7"))).await.1, "7");
    assert_eq!(auth_refusal(&optional, Some("junk")).await, "malformed");
    let (mut anon, _) = welcomed(&optional, None).await;
    send(&mut anon, json!({"type":"refresh","token":token("7")})).await;
    let (err, _) = recv_type(&mut anon, "error").await;
    assert_eq!(err["code"], "refresh_refused");
    assert!(
        err["message"].as_str().unwrap().starts_with("anonymous"),
        "{err}"
    );
}

#[tokio::test]
async fn a_token_is_refreshed_before_and_after_expiry_or_the_connection_closes_with_4001() {
    let setup = Setup::new("auth = \"required\"\nauth_leeway = 0\nauth_refresh_grace = 2\n");
    let fleet = Fleet::start(&["--config", &setup.config()]);
    let short = |sub: &str| sign(&json!({"sub": sub, "exp": now() + 2}), SECRET);

    // Before expiry: a fresh token for the same user is taken, another user's is not.
    let (mut early, _) = welcomed(&fleet, Some(&short("42"))).await;
    send(
        &mut early,
        json!({"type":"refresh","token":token("57"),"id":1}),
    )
    .await;
    let (err, _) = recv_type(&mut early, "error").await;
    assert_eq!(
        (&err["code"], &err["id"]),
        (&json!("refresh_refused"), &json!(1))
    );
    assert!(
        err["message"].as_str().unwrap().starts_with("other_user"),
        "{err}"
    );
    let fresh_exp = now() + 3600;
    let fresh = sign(&json!({"sub":"42","exp":fresh_exp}), SECRET);
    send(&mut early, json!({"type":"refresh","token":fresh,"id":2})).await;
    let (refreshed, _) = recv_type(&mut early, "refreshed").await;
    assert_eq!(refreshed["exp"], fresh_exp);

    // After expiry, within the grace: warned, then refreshed, and the connection lives on.
    let (mut late, _) = welcomed(&fleet, Some(&short("42"))).await;
    // Neither refreshed nor warned: closed with 4001 after the grace.
    let (mut lapsed, _) = welcomed(&fleet, Some(&short("43"))).await;
    let (warning, _) = recv_type(&mut late, "token_expiring").await;
    assert_eq!(
        warning["close_at"].as_u64().unwrap(),
        warning["exp"].as_u64().unwrap() + 2,
        "{warning}"
    );
    send(&mut late, json!({"type":"refresh","token":token("42")})).await;
    recv_type(&mut late, "refreshed").await;
    assert_eq!(close_code(&mut lapsed).await, Some(4001));

    // The refreshed connections were not closed: they still answer.
    for ws in [&mut early, &mut late] {
        join(ws, "after-refresh").await;
    }
}

/// Namespaces covering each audience and capability.
const RULES: &str = r#"
auth = "optional"
[[namespace]]
pattern = "dm:*"
authenticated = ["join", "publish", "history"]
user_limited = true
[[namespace]]
pattern = "pub:*"
anonymous = ["join", "history"]
authenticated = ["publish"]
[[namespace]]
pattern = "vip:*"
anonymous = ["join"]
granted = ["publish", "history"]
[[namespace]]
pattern = "open:*"
[[namespace]]
pattern = "*"
authenticated = ["join"]
"#;

/// Sends `request` (with `id` 1) and returns the answer: `ack`, `joined`, `history` or
/// `error`.
async fn ask(ws: &mut Ws, mut request: Value) -> Value {
    request["id"] = json!(1);
    send(ws, request).await;
    loop {
        let v = recv(ws).await;
        if v["id"] == 1 && ["ack", "history", "error"].contains(&v["type"].as_str().unwrap()) {
            return v;
        }
    }
}

/// "ok", or the error's code.
async fn outcome(ws: &mut Ws, request: Value) -> String {
    let v = ask(ws, request).await;
    match v["type"].as_str().unwrap() {
        "error" => v["code"].as_str().unwrap().to_owned(),
        _ => "ok".to_owned(),
    }
}

#[tokio::test]
async fn each_capability_is_allowed_or_forbidden_per_audience() {
    let setup = Setup::new(RULES);
    let fleet = Fleet::start(&["--config", &setup.config()]);
    let (mut anon, _) = welcomed(&fleet, None).await;
    let (mut user, _) = welcomed(&fleet, Some(&token("42"))).await;
    let granted = sign(
        &json!({"sub":"57","exp":now() + 600,
                "grants":[{"rooms":"vip:*","allow":["publish","history"]}]}),
        SECRET,
    );
    let (mut vip, _) = welcomed(&fleet, Some(&granted)).await;

    let join = |room: &str| json!({"type":"join","room":room});
    let publish = |room: &str| json!({"type":"publish","room":room,"data":"hi"});
    let history = |room: &str| json!({"type":"history","room":room});
    // (client, request, expected) — every capability allowed for one audience and
    // refused for another.
    let expected = [
        ("anon", join("pub:a"), "ok"),
        ("anon", join("closed"), "forbidden"),
        ("user", join("closed"), "ok"),
        ("anon", publish("pub:a"), "forbidden"),
        ("user", publish("pub:a"), "ok"),
        ("user", publish("vip:a"), "forbidden"),
        ("vip", publish("vip:a"), "ok"),
        ("anon", history("pub:a"), "ok"),
        ("anon", history("vip:a"), "forbidden"),
        ("user", history("vip:a"), "forbidden"),
        ("vip", history("vip:a"), "ok"),
        ("anon", publish("open:a"), "ok"),
        ("anon", join("dm:#42,57"), "forbidden"),
        ("user", join("dm:#42,57"), "ok"),
        ("vip", join("dm:#42,57"), "ok"),
        ("vip", join("dm:#42,99"), "forbidden"),
        ("user", join("dm:#42,,57"), "forbidden"),
    ];
    for (who, request, want) in expected {
        let ws = match who {
            "anon" => &mut anon,
            "user" => &mut user,
            _ => &mut vip,
        };
        let got = outcome(ws, request.clone()).await;
        assert_eq!(got, want, "{who} {request}");
    }
    // A refusal says what is missing and leaves the connection open.
    let refusal = ask(&mut anon, publish("pub:a")).await;
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("needs a token"),
        "{refusal}"
    );
    assert_eq!(outcome(&mut anon, join("open:b")).await, "ok");
    let since = json!({"type":"join","room":"closed","since":{"epoch":"e","seq":0}});
    assert_eq!(
        outcome(&mut user, since).await,
        "forbidden",
        "since needs history"
    );
}

#[tokio::test]
async fn the_tokens_rooms_are_joined_on_connect_as_permissions_allow() {
    let setup = Setup::new(RULES);
    let fleet = Fleet::start(&["--config", &setup.config()]);
    let claims = json!({"sub":"42","exp":now() + 600,"rooms":["pub:lobby","dm:#1,2"]});
    let (mut ws, _) = welcomed(&fleet, Some(&sign(&claims, SECRET))).await;
    let mut seen = vec![recv(&mut ws).await, recv(&mut ws).await];
    seen.sort_by_key(|v| v["type"].to_string());
    assert_eq!(seen[0]["code"], "forbidden", "{seen:?}");
    assert_eq!(
        (&seen[1]["type"], &seen[1]["room"]),
        (&json!("joined"), &json!("pub:lobby"))
    );
}

#[tokio::test]
async fn presence_notices_reach_only_members_with_the_presence_permission() {
    let setup = Setup::new(
        r#"auth = "optional"
[[namespace]]
pattern = "club:*"
anonymous = ["join", "publish"]
authenticated = ["join", "publish", "presence"]
"#,
    );
    let fleet = Fleet::start(&["--config", &setup.config(), "--workers", "2"]);
    let join = json!({"type":"join","room":"club:x"});
    let (mut anon, _) = welcomed(&fleet, None).await;
    assert_eq!(ask(&mut anon, join.clone()).await["type"], "ack");
    let (mut watcher, _) = welcomed(&fleet, Some(&token("42"))).await;
    assert_eq!(ask(&mut watcher, join.clone()).await["type"], "ack");
    let (mut newcomer, _) = welcomed(&fleet, Some(&token("57"))).await;
    assert_eq!(ask(&mut newcomer, join).await["type"], "ack");
    loop {
        let (notice, _) = recv_type(&mut watcher, "presence").await;
        if notice["event"] == "join" && notice["user"] == "57" {
            break;
        }
    }
    let publish = json!({"type":"publish","room":"club:x","data":"after"});
    assert_eq!(ask(&mut newcomer, publish).await["type"], "ack");
    // The master orders the notices before the message: whatever the anonymous member
    // got before it must hold no presence frame.
    let (message, before) = recv_type(&mut anon, "message").await;
    assert_eq!(message["data"], "after");
    assert!(
        before.iter().all(|v| v["type"] != "presence"),
        "a member without the presence permission got presence: {before:?}"
    );
    let (message, _) = recv_type(&mut watcher, "message").await;
    assert_eq!(message["data"], "after");
}

/// The status and limit header of a refused upgrade, or "101".
async fn limit_outcome(fleet: &Fleet, token: Option<&str>, keep: &mut Vec<Ws>) -> String {
    match open(fleet, token, false).await {
        Upgrade::Welcome(ws, _) => {
            keep.push(*ws);
            "101".to_owned()
        }
        Upgrade::Refused { status, limit, .. } => format!("{status} {}", limit.unwrap_or_default()),
    }
}

#[tokio::test]
async fn per_user_and_per_ip_limits_refuse_exactly_past_the_limit() {
    let setup = Setup::new(
        "auth = \"optional\"\nmax_connections_per_user = 2\nmax_connections_per_ip = 4\n",
    );
    let fleet = Fleet::start(&["--config", &setup.config(), "--workers", "2"]);
    let mut open_ones = Vec::new();
    let user = token("42");
    for want in ["101", "101", "429 user"] {
        assert_eq!(
            limit_outcome(&fleet, Some(&user), &mut open_ones).await,
            want
        );
    }
    assert_eq!(
        limit_outcome(&fleet, Some(&token("57")), &mut open_ones).await,
        "101"
    );
    for want in ["101", "429 ip"] {
        assert_eq!(limit_outcome(&fleet, None, &mut open_ones).await, want);
    }
    // Closing a connection gives its place back (the close completes asynchronously).
    let mut first = open_ones.swap_remove(0);
    first.close(None).await.unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while limit_outcome(&fleet, Some(&user), &mut open_ones).await != "101" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never given back"
        );
        tokio::task::yield_now().await;
    }
}

/// Two connections with `token` welcomed by two different workers: a connection that
/// lands on the first one's worker is closed and the loop tries again (refusals meanwhile
/// are its place not given back yet). Returns them with their worker slots.
async fn pair_on_two_workers(fleet: &Fleet, token: Option<&str>) -> Vec<(Ws, u64)> {
    let on = |welcome: &Value| welcome["worker"].as_u64().unwrap();
    let Upgrade::Welcome(first, w) = open(fleet, token, false).await else {
        panic!("the first connection was refused");
    };
    let first_worker = on(&w);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection landed on the other worker"
        );
        if let Upgrade::Welcome(mut ws, w) = open(fleet, token, false).await {
            if on(&w) != first_worker {
                return vec![(*first, first_worker), (*ws, on(&w))];
            }
            ws.close(None).await.unwrap();
        }
        tokio::task::yield_now().await;
    }
}

/// Refusals of `token`'s next upgrades: every one of them must be `want` (with the
/// limits per worker, some would land on a worker holding fewer than the limit).
async fn all_refused(fleet: &Fleet, token: Option<&str>, want: &str) {
    for _ in 0..20 {
        let mut kept = Vec::new();
        assert_eq!(limit_outcome(fleet, token, &mut kept).await, want);
    }
}

#[tokio::test]
async fn the_limits_hold_across_the_fleet() {
    let setup = Setup::new("auth = \"optional\"\nmax_connections_per_user = 2\n");
    let fleet = Fleet::start(&["--config", &setup.config(), "--workers", "2"]);
    let user = token("42");
    let _pair = pair_on_two_workers(&fleet, Some(&user)).await;
    all_refused(&fleet, Some(&user), "429 user").await;
    drop(_pair);

    let setup = Setup::new("max_connections_per_ip = 2\n");
    let fleet = Fleet::start(&["--config", &setup.config(), "--workers", "2"]);
    let _pair = pair_on_two_workers(&fleet, None).await;
    all_refused(&fleet, None, "429 ip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_gives_back_its_connections_places() {
    let setup = Setup::new("auth = \"optional\"\nmax_connections_per_user = 2\n");
    let fleet = Fleet::start(&["--config", &setup.config(), "--workers", "2"]);
    let user = token("42");
    let pair = pair_on_two_workers(&fleet, Some(&user)).await;
    all_refused(&fleet, Some(&user), "429 user").await;
    let victim_slot = pair[1].1;
    let (_, victim, _) = *fleet
        .ready_pids()
        .iter()
        .find(|(slot, _, _)| *slot == victim_slot)
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(victim as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    // The user holds one place now (on the surviving worker): one more connection is
    // welcomed once the master has seen the exit, and the next is refused again.
    let mut kept = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    while limit_outcome(&fleet, Some(&user), &mut kept).await != "101" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the killed worker's places were never given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    all_refused(&fleet, Some(&user), "429 user").await;
}

#[tokio::test]
async fn the_per_ip_connect_rate_refuses_past_its_burst() {
    let fleet = Fleet::start(&["--workers", "1", "--ip-connects-per-minute", "3"]);
    let mut kept = Vec::new();
    for want in ["101", "101", "101", "429 rate"] {
        assert_eq!(limit_outcome(&fleet, None, &mut kept).await, want);
    }
    drop(kept);
    assert_eq!(
        limit_outcome(&fleet, None, &mut Vec::new()).await,
        "429 rate",
        "closing does not refill"
    );
}
