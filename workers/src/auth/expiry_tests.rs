//! Tests of the [`super::Expiry`] state machine and its frames.

use super::*;

const GRACE: Duration = Duration::from_secs(30);

fn claims(sub: &str, exp: u64) -> Claims {
    Claims::from_json(&format!(r#"{{"sub":"{sub}","exp":{exp}}}"#)).unwrap()
}

#[test]
fn warns_at_exp_then_closes_after_the_grace() {
    let mut e = Expiry::new(&claims("42", 1000), GRACE);
    assert_eq!(e.next_check(), Some(1000));
    assert_eq!(e.tick(999), Action::Wait);
    assert_eq!(
        e.tick(1000),
        Action::Warn {
            exp: 1000,
            close_at: 1030
        }
    );
    assert_eq!(e.next_check(), Some(1030));
    assert_eq!(e.tick(1001), Action::Wait, "the warning is sent once");
    assert_eq!(e.tick(1029), Action::Wait);
    assert_eq!(e.tick(1030), Action::Close);
    assert_eq!(e.next_check(), None);
    assert_eq!(e.tick(5000), Action::Wait, "the close is ordered once");
}

#[test]
fn a_late_first_tick_closes_at_once() {
    let mut e = Expiry::new(&claims("42", 1000), GRACE);
    assert_eq!(e.tick(1030), Action::Close);
}

#[test]
fn refresh_within_the_grace_restarts_the_clock() {
    let mut e = Expiry::new(&claims("42", 1000), GRACE);
    assert!(matches!(e.tick(1000), Action::Warn { .. }));
    assert_eq!(e.refresh(&claims("42", 2000), 1010), Ok(2000));
    assert_eq!(e.next_check(), Some(2000));
    assert_eq!(
        e.tick(1031),
        Action::Wait,
        "the old deadline no longer applies"
    );
    assert_eq!(
        e.tick(2000),
        Action::Warn {
            exp: 2000,
            close_at: 2030
        }
    );
}

#[test]
fn refresh_before_expiry() {
    let mut e = Expiry::new(&claims("42", 1000), GRACE);
    assert_eq!(e.refresh(&claims("42", 1500), 900), Ok(1500));
    assert_eq!(e.tick(1000), Action::Wait);
    assert!(matches!(e.tick(1500), Action::Warn { exp: 1500, .. }));
}

#[test]
fn refresh_after_the_grace_is_too_late() {
    let mut e = Expiry::new(&claims("42", 1000), GRACE);
    assert!(matches!(e.tick(1000), Action::Warn { .. }));
    assert_eq!(
        e.refresh(&claims("42", 2000), 1030),
        Err(RefreshError::TooLate)
    );
    assert_eq!(e.next_check(), None);
    let mut never_ticked = Expiry::new(&claims("42", 1000), GRACE);
    assert_eq!(
        never_ticked.refresh(&claims("42", 2000), 1100),
        Err(RefreshError::TooLate)
    );
}

#[test]
fn refresh_for_another_user_is_refused_and_the_deadline_stands() {
    let mut e = Expiry::new(&claims("42", 1000), GRACE);
    assert!(matches!(e.tick(1000), Action::Warn { .. }));
    assert_eq!(
        e.refresh(&claims("57", 2000), 1005),
        Err(RefreshError::OtherUser)
    );
    assert_eq!(e.tick(1030), Action::Close);
}

#[test]
fn frames_and_refusals() {
    let warn: serde_json::Value = serde_json::from_str(&warning_frame(1000, 1030)).unwrap();
    assert_eq!(
        warn,
        serde_json::json!({"type":"token_expiring","exp":1000,"close_at":1030})
    );
    let ok: serde_json::Value = serde_json::from_str(&refreshed_frame(7)).unwrap();
    assert_eq!(ok, serde_json::json!({"type":"refreshed","exp":7}));
    let req: serde_json::Value = serde_json::from_str(&refresh_request("a\"b")).unwrap();
    assert_eq!(req, serde_json::json!({"type":"refresh","token":"a\"b"}));
    let r = RefreshError::Token(TokenError::Expired).refusal();
    assert_eq!(r.code, "refresh_refused");
    assert!(r.message.starts_with("expired: "), "{}", r.message);
    assert!(
        RefreshError::OtherUser
            .refusal()
            .message
            .starts_with("other_user: ")
    );
    assert!(
        RefreshError::Anonymous
            .refusal()
            .message
            .starts_with("anonymous: ")
    );
    let cause = crate::conn::CloseCause::TOKEN_EXPIRED;
    assert_eq!((cause.code, cause.reason), (4001, "token expired"));
}

#[test]
fn clocks_warn_and_close_the_due_connections_only() {
    let mut clocks = Clocks::default();
    assert!(clocks.due(u64::MAX - 1).is_empty(), "no clock, nothing due");
    clocks.insert(1, Expiry::new(&claims("42", 1000), GRACE));
    clocks.insert(2, Expiry::new(&claims("57", 5000), GRACE));
    assert!(clocks.due(999).is_empty());
    assert_eq!(
        clocks.due(1000),
        [(
            1,
            Action::Warn {
                exp: 1000,
                close_at: 1030
            }
        )]
    );
    assert_eq!(clocks.refresh(1, &claims("42", 2000), 1010), Ok(2000));
    assert!(clocks.due(1030).is_empty(), "refreshed: no close");
    assert!(matches!(clocks.due(2000)[..], [(1, Action::Warn { .. })]));
    assert_eq!(clocks.due(2030), [(1, Action::Close)]);
    assert_eq!(
        clocks.refresh(1, &claims("42", 9000), 2031),
        Err(RefreshError::Anonymous),
        "a closed clock is gone"
    );
    clocks.remove(2);
    assert!(clocks.due(6000).is_empty());
    assert_eq!(
        clocks.refresh(3, &claims("42", 9000), 1),
        Err(RefreshError::Anonymous)
    );
}
