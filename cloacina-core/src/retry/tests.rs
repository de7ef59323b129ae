use super::*;
use crate::clock::{FixedRandom, SeededRandom};

#[test]
fn zero_attempts_is_an_error() {
    assert_eq!(RetryPolicy::builder().total_attempts(0).build(), Err(RetryPolicyError::ZeroAttempts));
    assert_eq!("total_attempts=0".parse::<RetryPolicy>(), Err(RetryPolicyError::ZeroAttempts));
}

#[test]
fn unknown_names_are_errors() {
    assert_eq!(
        "backoff=fibonacci(1s)".parse::<RetryPolicy>(),
        Err(RetryPolicyError::UnknownBackoff { name: "fibonacci".into() })
    );
    assert_eq!(
        "retry_on=sometimes".parse::<RetryPolicy>(),
        Err(RetryPolicyError::UnknownCondition { name: "sometimes".into() })
    );
    assert!(matches!(
        "backoff=fixed(soon)".parse::<RetryPolicy>(),
        Err(RetryPolicyError::Invalid { what: "duration", .. })
    ));
    assert!(matches!(
        "colour=blue".parse::<RetryPolicy>(),
        Err(RetryPolicyError::Invalid { what: "retry policy key", .. })
    ));
    assert!(matches!("jitter=2".parse::<RetryPolicy>(), Err(RetryPolicyError::Invalid { what: "jitter", .. })));
    assert!(matches!(
        "backoff=exponential(1s, 0.5)".parse::<RetryPolicy>(),
        Err(RetryPolicyError::Invalid { what: "multiplier", .. })
    ));
    assert!(matches!("retry_on=patterns()".parse::<RetryPolicy>(), Err(RetryPolicyError::Invalid { .. })));
}

#[test]
fn backoffs_grow_as_documented() {
    let s = Duration::from_secs;
    assert_eq!(Backoff::Fixed(s(2)).delay(5), s(2));
    assert_eq!(Backoff::Linear(s(2)).delay(3), s(6));
    let e = Backoff::Exponential { base: s(1), multiplier: 3.0 };
    assert_eq!((e.delay(1), e.delay(2), e.delay(3)), (s(1), s(3), s(9)));
    assert_eq!(Backoff::Exponential { base: s(1), multiplier: 10.0 }.delay(400), Duration::MAX);
}

#[test]
fn delays_are_capped_and_jittered_deterministically() {
    let p = RetryPolicy::builder()
        .total_attempts(10)
        .backoff(Backoff::Linear(Duration::from_secs(10)))
        .max_delay(Duration::from_secs(25))
        .jitter(0.5)
        .build()
        .unwrap();
    let err = TaskError::transient("x");
    assert_eq!(p.decide(5, &err, &FixedRandom(0.0)), RetryDecision::Retry { delay: Duration::from_secs(25) });
    assert_eq!(p.decide(1, &err, &FixedRandom(0.5)), RetryDecision::Retry { delay: Duration::from_millis(7500) });
    // Attempt 2: 20 s (under the cap), shortened by half the seeded draw.
    let draw = SeededRandom::new(1).next_unit();
    let expected = Duration::from_secs(20).mul_f64(1.0 - 0.5 * draw);
    assert_eq!(p.decide(2, &err, &SeededRandom::new(1)), RetryDecision::Retry { delay: expected });
    assert_ne!(
        p.decide(2, &err, &SeededRandom::new(1)),
        p.decide(2, &err, &SeededRandom::new(2)),
        "another seed, another jitter"
    );
    // The cap itself is bounded: a retry time must stay a storable instant.
    assert!(matches!(
        RetryPolicy::builder().max_delay(Duration::MAX).build(),
        Err(RetryPolicyError::Invalid { what: "max_delay", .. })
    ));
    let year = RetryPolicy::builder().max_delay(RetryPolicy::MAX_DELAY).build().unwrap();
    let huge = TaskError::retry_after(Duration::MAX, "much later");
    assert_eq!(year.decide(1, &huge, &FixedRandom(0.0)), RetryDecision::Retry { delay: RetryPolicy::MAX_DELAY });
    // An explicit retry-after is honoured, still capped.
    let ra = TaskError::retry_after(Duration::from_secs(3), "slow down");
    assert_eq!(p.decide(1, &ra, &FixedRandom(0.0)), RetryDecision::Retry { delay: Duration::from_secs(3) });
}

/// A draw is taken only for a retry that is granted, and exactly one:
/// a give-up must not consume one, or every later jitter of a seeded
/// source would shift and runs would stop being reproducible.
#[test]
fn jitter_draws_once_per_granted_retry_and_never_on_give_up() {
    use crate::clock::MockRandomSource;
    let p = RetryPolicy::builder()
        .total_attempts(3)
        .backoff(Backoff::Fixed(Duration::from_secs(10)))
        .jitter(0.5)
        .build()
        .unwrap();

    let mut rng = MockRandomSource::new();
    rng.expect_next_unit().times(1).return_const(0.25);
    let d = p.decide(1, &TaskError::transient("x"), &rng);
    assert_eq!(d, RetryDecision::Retry { delay: Duration::from_millis(8750) });
    rng.checkpoint();

    // No draw: attempts exhausted, not retryable, fatal.
    rng.expect_next_unit().never();
    assert!(matches!(
        p.decide(3, &TaskError::transient("x"), &rng),
        RetryDecision::GiveUp { reason: GiveUpReason::AttemptsExhausted }
    ));
    let transient_only = RetryPolicy::builder().condition(RetryCondition::TransientOnly).build().unwrap();
    assert!(matches!(
        transient_only.decide(1, &TaskError::permanent("x"), &rng),
        RetryDecision::GiveUp { reason: GiveUpReason::NotRetryable }
    ));
    assert!(matches!(
        p.decide(1, &TaskError::fatal("x"), &rng),
        RetryDecision::GiveUp { reason: GiveUpReason::NotRetryable }
    ));
    rng.checkpoint();
}

#[test]
fn conditions_select_failures() {
    let rng = FixedRandom(0.0);
    let transient_only = RetryPolicy::builder().condition(RetryCondition::TransientOnly).build().unwrap();
    assert!(matches!(
        transient_only.decide(1, &TaskError::permanent("x"), &rng),
        RetryDecision::GiveUp { reason: GiveUpReason::NotRetryable }
    ));
    assert!(matches!(
        transient_only.decide(1, &TaskError::Timeout { after: Duration::from_secs(1) }, &rng),
        RetryDecision::Retry { .. }
    ));
    let all = RetryPolicy::default();
    assert!(matches!(
        all.decide(1, &TaskError::fatal("x"), &rng),
        RetryDecision::GiveUp { reason: GiveUpReason::NotRetryable }
    ));
    assert!(matches!(
        all.decide(3, &TaskError::permanent("x"), &rng),
        RetryDecision::GiveUp { reason: GiveUpReason::AttemptsExhausted }
    ));
    let pats = RetryPolicy::builder().condition("patterns(deadlock|reset)".parse().unwrap()).build().unwrap();
    assert!(matches!(
        pats.decide(1, &TaskError::permanent("connection reset by peer"), &rng),
        RetryDecision::Retry { .. }
    ));
    assert!(matches!(pats.decide(1, &TaskError::permanent("bad row"), &rng), RetryDecision::GiveUp { .. }));
    assert!(matches!(RetryPolicy::none().decide(1, &TaskError::transient("x"), &rng), RetryDecision::GiveUp { .. }));
}

#[test]
fn display_round_trips() {
    let p = RetryPolicy::builder()
        .backoff(Backoff::Exponential { base: Duration::from_millis(1500), multiplier: 1.5 })
        .condition(RetryCondition::MessagePatterns(vec!["a b".into(), "c".into()]))
        .build()
        .unwrap();
    assert_eq!(p.to_string().parse::<RetryPolicy>().unwrap(), p);
    assert_eq!(RetryPolicy::default().to_string().parse::<RetryPolicy>().unwrap(), RetryPolicy::default());
}
