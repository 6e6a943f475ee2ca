//! Tests of [`super::PermissionRules::allowed`]: every capability for each audience,
//! grants, first-match order, user-limited rooms and the rules' serde form.

use super::*;
use crate::auth::claims::Claims;

/// The rules of the module's example, as the config (JSON here) would carry them.
fn rules() -> PermissionRules {
    serde_json::from_str(
        r#"[
          {"pattern": "dm:*", "authenticated": ["join","publish","history","presence"],
           "user_limited": true},
          {"pattern": "chat:*", "anonymous": ["join","history"],
           "authenticated": ["join","publish","history","presence"]},
          {"pattern": "admin:*", "granted": ["join","publish","history","presence"]},
          {"pattern": "open#room", "anonymous": ["join","publish","history","presence"]},
          {"pattern": "*", "authenticated": ["join"]}
        ]"#,
    )
    .unwrap()
}

fn user(sub: &str, grants: &str) -> Identity {
    let json = format!(r#"{{"sub":"{sub}","exp":1,"grants":{grants}}}"#);
    Identity::User(Box::new(Claims::from_json(&json).unwrap()))
}

fn allowed_caps(rules: &PermissionRules, who: &Identity, room: &str) -> Vec<&'static str> {
    Capability::ALL
        .into_iter()
        .filter(|c| rules.allowed(who, room, *c) == Decision::Allow)
        .map(Capability::name)
        .collect()
}

#[test]
fn anonymous_gets_only_anonymous_capabilities() {
    let r = rules();
    let anon = Identity::Anonymous;
    assert_eq!(allowed_caps(&r, &anon, "chat:lobby"), ["join", "history"]);
    assert_eq!(
        r.allowed(&anon, "chat:lobby", Capability::Publish),
        Decision::Deny(Denial::NeedsToken(Capability::Publish))
    );
    assert_eq!(
        r.allowed(&anon, "chat:lobby", Capability::Presence),
        Decision::Deny(Denial::NeedsToken(Capability::Presence))
    );
    assert!(allowed_caps(&r, &anon, "admin:ops").is_empty());
    assert!(allowed_caps(&r, &anon, "news").is_empty());
    assert_eq!(
        r.allowed(&anon, "news", Capability::Publish),
        Decision::Deny(Denial::NotAllowed(Capability::Publish))
    );
}

#[test]
fn authenticated_gets_its_own_and_anonymous_capabilities() {
    let r = rules();
    let u = user("42", "[]");
    assert_eq!(
        allowed_caps(&r, &u, "chat:lobby"),
        ["join", "publish", "history", "presence"]
    );
    assert_eq!(allowed_caps(&r, &u, "news"), ["join"]);
    for cap in [
        Capability::Publish,
        Capability::History,
        Capability::Presence,
    ] {
        assert_eq!(
            r.allowed(&u, "news", cap),
            Decision::Deny(Denial::NotAllowed(cap))
        );
    }
    for cap in Capability::ALL {
        assert_eq!(
            r.allowed(&u, "admin:ops", cap),
            Decision::Deny(Denial::NeedsGrant(cap))
        );
    }
}

#[test]
fn grants_allow_exactly_what_they_list_where_they_match() {
    let r = rules();
    let granted = user(
        "7",
        r#"[{"rooms":"admin:ops","allow":["join","history"]},
                                {"rooms":"admin:logs*","allow":["publish","presence"]}]"#,
    );
    assert_eq!(allowed_caps(&r, &granted, "admin:ops"), ["join", "history"]);
    assert_eq!(
        allowed_caps(&r, &granted, "admin:logs:1"),
        ["publish", "presence"]
    );
    assert!(allowed_caps(&r, &granted, "admin:other").is_empty());
    // A grant cannot lift a rule's ceiling: `news` grants nothing to tokens.
    let greedy = user(
        "8",
        r#"[{"rooms":"*","allow":["join","publish","history","presence"]}]"#,
    );
    assert_eq!(allowed_caps(&r, &greedy, "news"), ["join"]);
    assert_eq!(allowed_caps(&r, &greedy, "admin:x").len(), 4);
}

#[test]
fn unmatched_rooms_are_open_and_empty_rules_allow_everything() {
    let none = PermissionRules::default();
    assert_eq!(allowed_caps(&none, &Identity::Anonymous, "any").len(), 4);
    let only_chat: PermissionRules =
        serde_json::from_str(r#"[{"pattern":"chat:*","authenticated":["join"]}]"#).unwrap();
    assert_eq!(
        allowed_caps(&only_chat, &Identity::Anonymous, "news").len(),
        4
    );
    assert!(allowed_caps(&only_chat, &Identity::Anonymous, "chat:x").is_empty());
}

#[test]
fn first_match_wins() {
    let r: PermissionRules = serde_json::from_str(
        r#"[{"pattern":"chat:vip","granted":["join"]},
            {"pattern":"chat:*","anonymous":["join"]}]"#,
    )
    .unwrap();
    assert_eq!(allowed_caps(&r, &Identity::Anonymous, "chat:x"), ["join"]);
    assert!(allowed_caps(&r, &Identity::Anonymous, "chat:vip").is_empty());
}

#[test]
fn user_limited_rooms_admit_only_their_users() {
    let r = rules();
    let all = ["join", "publish", "history", "presence"];
    assert_eq!(allowed_caps(&r, &user("42", "[]"), "dm:#42,57"), all);
    assert_eq!(allowed_caps(&r, &user("57", "[]"), "dm:#42,57"), all);
    for who in [user("4", "[]"), user("42,57", "[]"), Identity::Anonymous] {
        for cap in Capability::ALL {
            assert_eq!(
                r.allowed(&who, "dm:#42,57", cap),
                Decision::Deny(Denial::NotListedUser),
                "{who:?}"
            );
        }
    }
    // An empty id admits nobody, not even the listed users.
    for room in ["dm:#", "dm:#42,", "dm:#42,,57"] {
        assert!(
            allowed_caps(&r, &user("42", "[]"), room).is_empty(),
            "{room}"
        );
    }
    // Without `#` the rule applies as usual; without `user_limited`, `#` is ordinary.
    assert_eq!(allowed_caps(&r, &user("1", "[]"), "dm:lobby"), all);
    assert_eq!(allowed_caps(&r, &Identity::Anonymous, "open#room").len(), 4);
    assert!(!admits("dm:#42", None) && admits("dm:plain", None));
}

#[test]
fn refusals_are_forbidden_errors() {
    let r = Denial::NeedsGrant(Capability::Publish).refusal();
    assert_eq!(r.code, "forbidden");
    assert_eq!(r.message, "your token does not grant publish in this room");
    assert_eq!(Denial::NotListedUser.refusal().code, "forbidden");
    assert!(
        Denial::NeedsToken(Capability::Join)
            .refusal()
            .message
            .contains("token")
    );
    assert!(
        Denial::NotAllowed(Capability::History)
            .refusal()
            .message
            .contains("history")
    );
}

#[test]
fn bad_rules_are_refused_with_the_field() {
    for (json, needle) in [
        (r#"[{"pattern":"a*b"}]"#, "only have `*`"),
        (r#"[{"pattern":"a","anonymous":["fly"]}]"#, "fly"),
        (r#"[{"pattern":"a","everyone":["join"]}]"#, "everyone"),
        (r#"[{"anonymous":["join"]}]"#, "pattern"),
    ] {
        let err = serde_json::from_str::<PermissionRules>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
}

#[test]
fn rules_survive_the_trip_to_the_workers() {
    let r = rules();
    let config = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&r, config).unwrap();
    let (back, _): (PermissionRules, usize) =
        bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(back, r);
    let json: PermissionRules = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(json, r);
}
