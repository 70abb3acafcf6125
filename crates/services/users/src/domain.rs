//! The users service's rules, without IO: what a valid registration and profile are, how a
//! profile patch merges, when repeated login failures lock an address out, and what the admin
//! bootstrap must do to an existing account.

use emporium_events::{Preferences, Role};
use emporium_platform::api::{ApiError, Checks, is_email};

/// Shortest password accepted (CONTRACT §2).
pub const PASSWORD_MIN: usize = 8;
/// Longest password accepted: bounds the hashing work one request can ask for.
pub const PASSWORD_MAX: usize = 1024;
/// Longest display name.
pub const NAME_MAX: usize = 100;
/// Longest phone number as typed (spaces and punctuation included).
pub const PHONE_MAX: usize = 32;

/// The key an email address is unique under: addresses differing only in case are one account.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Does `text` hold a control character (Unicode `Cc`: C0, DEL, C1)? None belongs in a name, an
/// address or a phone number, and PostgreSQL refuses NUL in `TEXT` outright.
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// An email address an account can have: [`is_email`], and no control characters.
pub fn is_address(text: &str) -> bool {
    is_email(text) && !has_control(text)
}

/// A registration that passed the checks: trimmed email and name, the password as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub email: String,
    pub password: String,
    pub name: String,
}

/// Checks a registration; every wrong field is reported at once.
pub fn registration(email: &str, password: &str, name: &str) -> Result<Registration, ApiError> {
    let email = email.trim();
    let name = name.trim();
    let mut checks = Checks::new();
    checks.check(is_address(email), "email", "must be an email address");
    check_password(&mut checks, password);
    check_name(&mut checks, name);
    checks.finish()?;
    Ok(Registration {
        email: email.to_owned(),
        password: password.to_owned(),
        name: name.to_owned(),
    })
}

fn check_password(checks: &mut Checks, password: &str) {
    let length = password.chars().count();
    checks.check(
        length >= PASSWORD_MIN,
        "password",
        format!("must be at least {PASSWORD_MIN} characters"),
    );
    checks.check(
        length <= PASSWORD_MAX,
        "password",
        format!("must be at most {PASSWORD_MAX} characters"),
    );
}

fn check_name(checks: &mut Checks, name: &str) {
    let length = name.chars().count();
    checks.check(
        (1..=NAME_MAX).contains(&length),
        "name",
        format!("must be 1 to {NAME_MAX} characters"),
    );
    checks.check(
        !has_control(name),
        "name",
        "must not contain control characters",
    );
}

/// A plausible phone number: digits with optional `+` in front and spaces, dashes, dots or
/// parentheses between, 6 to 15 digits (E.164 allows at most 15). Nothing else, so no control
/// characters either.
pub fn is_phone(text: &str) -> bool {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    let body = text.strip_prefix('+').unwrap_or(text);
    text.chars().count() <= PHONE_MAX
        && (6..=15).contains(&digits)
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
}

/// The part of a user they can change themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub phone: Option<String>,
    pub preferences: Preferences,
}

pub use emporium_platform::api::Change;

/// Preference flags to change; the others keep their current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PreferencesPatch {
    pub order_updates: Option<bool>,
    pub promotions: Option<bool>,
    pub recommendations: Option<bool>,
}

/// `PATCH /api/users/me`, as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfilePatch {
    pub name: Change<String>,
    pub phone: Change<String>,
    pub preferences: Change<PreferencesPatch>,
}

impl Profile {
    /// The profile after `patch`, or the fields that make it invalid. A name cannot be cleared
    /// (it is required), nor can the preferences (they always have a value); a phone can.
    pub fn patched(&self, patch: &ProfilePatch) -> Result<Profile, ApiError> {
        let mut checks = Checks::new();
        let name = match &patch.name {
            Change::Keep => self.name.clone(),
            Change::Clear => {
                checks.check(false, "name", "cannot be null");
                self.name.clone()
            }
            Change::Set(name) => {
                let name = name.trim();
                check_name(&mut checks, name);
                name.to_owned()
            }
        };
        let phone = match &patch.phone {
            Change::Keep => self.phone.clone(),
            Change::Clear => None,
            Change::Set(phone) => {
                let phone = phone.trim();
                checks.check(
                    is_phone(phone),
                    "phone",
                    "must be a phone number: 6 to 15 digits, optionally with a leading +",
                );
                Some(phone.to_owned())
            }
        };
        let preferences = match &patch.preferences {
            Change::Keep => self.preferences,
            Change::Clear => {
                checks.check(false, "preferences", "cannot be null");
                self.preferences
            }
            Change::Set(flags) => merge_preferences(self.preferences, *flags),
        };
        checks.finish()?;
        Ok(Profile {
            name,
            phone,
            preferences,
        })
    }
}

/// The flags of `patch` that are set, over `current`.
pub fn merge_preferences(current: Preferences, patch: PreferencesPatch) -> Preferences {
    Preferences {
        order_updates: patch.order_updates.unwrap_or(current.order_updates),
        promotions: patch.promotions.unwrap_or(current.promotions),
        recommendations: patch.recommendations.unwrap_or(current.recommendations),
    }
}

/// Failed logins for one address beyond which further attempts are refused for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failures allowed in the window; the next attempt is refused.
    pub max_failures: usize,
    /// The sliding window, milliseconds.
    pub window_ms: i64,
}

impl Default for LoginThrottle {
    /// Five failures in fifteen minutes: enough for a person who mistypes, far too few to guess.
    fn default() -> Self {
        LoginThrottle {
            max_failures: 5,
            window_ms: 15 * 60 * 1000,
        }
    }
}

impl LoginThrottle {
    /// Failures at or before this instant no longer count at `now`.
    pub fn window_start(&self, now_ms: i64) -> i64 {
        now_ms - self.window_ms
    }

    /// Given the times (epoch ms, ascending) of the failures inside the window, may a login be
    /// attempted at `now`? `Err(seconds)` is how long until one may.
    pub fn check(&self, failures_ms: &[i64], now_ms: i64) -> Result<(), u64> {
        let recent: Vec<i64> = failures_ms
            .iter()
            .copied()
            .filter(|at| *at > self.window_start(now_ms))
            .collect();
        if recent.len() < self.max_failures {
            return Ok(());
        }
        // An attempt is allowed again once all but `max_failures - 1` have left the window.
        let leaving = recent.len() + 1 - self.max_failures;
        let frees_at = recent
            .get(leaving - 1)
            .map_or(now_ms, |at| at + self.window_ms);
        let wait_ms = (frees_at - now_ms).max(1);
        Err(u64::try_from(wait_ms.div_euclid(1000) + i64::from(wait_ms % 1000 != 0)).unwrap_or(1))
    }
}

/// What the admin bootstrap must do, given the account that already has the configured email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// No such account: create it as an admin.
    Create,
    /// The account exists; make it what the configuration says.
    Update { promote: bool, reset_password: bool },
    /// Already an admin with the configured password.
    Nothing,
}

/// Decides the bootstrap for an existing account (`None`: there is none).
pub fn bootstrap(existing: Option<(Role, bool)>) -> Bootstrap {
    match existing {
        None => Bootstrap::Create,
        Some((role, password_matches)) => {
            let promote = role != Role::Admin;
            let reset_password = !password_matches;
            if promote || reset_password {
                Bootstrap::Update {
                    promote,
                    reset_password,
                }
            } else {
                Bootstrap::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(error: ApiError) -> Vec<String> {
        error.errors.into_iter().map(|e| e.field).collect()
    }

    fn profile() -> Profile {
        Profile {
            name: "Ada".into(),
            phone: Some("+44 20 7946 0000".into()),
            preferences: Preferences::default(),
        }
    }

    #[test]
    fn a_valid_registration_is_trimmed() {
        let r = registration(" Ada@Example.com ", "correct-horse", "  Ada Lovelace ").unwrap();
        assert_eq!(r.email, "Ada@Example.com");
        assert_eq!(r.name, "Ada Lovelace");
        assert_eq!(r.password, "correct-horse");
        assert_eq!(email_key(&r.email), "ada@example.com");
    }

    #[test]
    fn every_bad_registration_field_is_named() {
        let error = registration("not-an-email", "short", "").unwrap_err();
        assert_eq!(error.status.as_u16(), 400);
        assert_eq!(fields(error), ["email", "password", "name"]);
        let long_name = "x".repeat(NAME_MAX + 1);
        assert_eq!(
            fields(registration("a@b.co", "12345678", &long_name).unwrap_err()),
            ["name"]
        );
        let long_password = "p".repeat(PASSWORD_MAX + 1);
        assert_eq!(
            fields(registration("a@b.co", &long_password, "Ada").unwrap_err()),
            ["password"]
        );
        assert_eq!(
            fields(registration("a@b.co", "1234567", "Ada").unwrap_err()),
            ["password"]
        );
        assert!(registration("a@b.co", "12345678", &"x".repeat(NAME_MAX)).is_ok());
    }

    #[test]
    fn passwords_are_counted_in_characters_not_bytes() {
        // Eight characters, sixteen bytes.
        assert!(registration("a@b.co", "éééééééé", "Ada").is_ok());
        assert!(registration("a@b.co", "ééééééé", "Ada").is_err());
    }

    #[test]
    fn control_characters_are_refused_in_names_and_addresses() {
        for name in [
            "Ada\0",
            "Ada\nLovelace",
            "\u{1b}[31mAda",
            "Ada\u{7f}",
            "Ada\u{85}Lovelace",
        ] {
            assert_eq!(
                fields(registration("a@b.co", "12345678", name).unwrap_err()),
                ["name"],
                "{name:?}"
            );
        }
        assert_eq!(
            fields(registration("a\0@b.co", "12345678", "Ada").unwrap_err()),
            ["email"]
        );
        assert!(!is_address("a@b.co\u{7}"));
        // Only the name's ends are trimmed; what is left must be clean.
        assert_eq!(
            registration("a@b.co", "12345678", "\tAda\n").unwrap().name,
            "Ada"
        );
        let patch = ProfilePatch {
            name: Change::Set("Ada\0".into()),
            phone: Change::Set("123456\0".into()),
            ..ProfilePatch::default()
        };
        assert_eq!(
            fields(profile().patched(&patch).unwrap_err()),
            ["name", "phone"]
        );
    }

    #[test]
    fn phone_numbers_are_checked() {
        for good in [
            "+44 20 7946 0000",
            "020-7946-0000",
            "(555) 123.4567",
            "123456",
        ] {
            assert!(is_phone(good), "{good}");
        }
        for bad in [
            "",
            "12345",
            "call me",
            "+44 20 7946 0000 ext 1",
            "1234567890123456",
            "++123456",
        ] {
            assert!(!is_phone(bad), "{bad}");
        }
    }

    #[test]
    fn given_a_profile_when_only_one_preference_is_patched_then_the_others_stay() {
        let mut current = profile();
        current.preferences.recommendations = false;
        let patch = ProfilePatch {
            preferences: Change::Set(PreferencesPatch {
                promotions: Some(false),
                ..PreferencesPatch::default()
            }),
            ..ProfilePatch::default()
        };
        let patched = current.patched(&patch).unwrap();
        assert_eq!(
            patched.preferences,
            Preferences {
                order_updates: true,
                promotions: false,
                recommendations: false
            }
        );
        assert_eq!(patched.name, current.name);
        assert_eq!(patched.phone, current.phone);
    }

    #[test]
    fn given_a_profile_when_the_patch_is_empty_then_nothing_changes() {
        assert_eq!(
            profile().patched(&ProfilePatch::default()).unwrap(),
            profile()
        );
    }

    #[test]
    fn given_a_profile_when_the_phone_is_nulled_then_it_is_cleared_and_the_name_set() {
        let patch = ProfilePatch {
            name: Change::Set("  Countess Lovelace ".into()),
            phone: Change::Clear,
            ..ProfilePatch::default()
        };
        let patched = profile().patched(&patch).unwrap();
        assert_eq!(patched.name, "Countess Lovelace");
        assert_eq!(patched.phone, None);
    }

    #[test]
    fn given_a_profile_when_the_patch_is_invalid_then_every_bad_field_is_named() {
        let patch = ProfilePatch {
            name: Change::Clear,
            phone: Change::Set("nope".into()),
            preferences: Change::Clear,
        };
        assert_eq!(
            fields(profile().patched(&patch).unwrap_err()),
            ["name", "phone", "preferences"]
        );
        let blank = ProfilePatch {
            name: Change::Set("   ".into()),
            ..ProfilePatch::default()
        };
        assert_eq!(fields(profile().patched(&blank).unwrap_err()), ["name"]);
    }

    #[test]
    fn serde_field_states_map_to_changes() {
        assert_eq!(Change::<u8>::from_field(None), Change::Keep);
        assert_eq!(Change::<u8>::from_field(Some(None)), Change::Clear);
        assert_eq!(Change::from_field(Some(Some(3))), Change::Set(3));
    }

    #[test]
    fn given_fewer_failures_than_the_limit_when_logging_in_then_it_is_allowed() {
        let throttle = LoginThrottle::default();
        let now = 10_000_000;
        assert_eq!(throttle.check(&[], now), Ok(()));
        assert_eq!(
            throttle.check(&[now - 4, now - 3, now - 2, now - 1], now),
            Ok(())
        );
    }

    #[test]
    fn given_the_limit_reached_when_logging_in_then_it_waits_for_the_oldest_to_expire() {
        let throttle = LoginThrottle::default();
        let now = 10_000_000;
        let oldest = now - 60_000;
        let failures = [oldest, now - 4, now - 3, now - 2, now - 1];
        // The oldest leaves the window 14 minutes from now.
        assert_eq!(throttle.check(&failures, now), Err(14 * 60));
        // Just after it left, one more attempt is allowed.
        assert_eq!(
            throttle.check(&failures, oldest + throttle.window_ms + 1),
            Ok(())
        );
    }

    #[test]
    fn given_more_failures_than_the_limit_when_logging_in_then_enough_must_expire() {
        let throttle = LoginThrottle::default();
        let now = 10_000_000;
        // Seven failures (recorded under a higher limit, say): three must leave the window.
        let failures = [
            now - 70_000,
            now - 60_000,
            now - 50_000,
            now - 4,
            now - 3,
            now - 2,
            now - 1,
        ];
        assert_eq!(throttle.check(&failures, now), Err(14 * 60 + 10));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let throttle = LoginThrottle::default();
        let now = 10_000_000;
        let old = now - throttle.window_ms;
        assert_eq!(throttle.check(&[old, old, old, old, now - 1], now), Ok(()));
    }

    #[test]
    fn the_wait_is_rounded_up_to_whole_seconds() {
        let throttle = LoginThrottle {
            max_failures: 1,
            window_ms: 1500,
        };
        assert_eq!(throttle.check(&[1000], 1000), Err(2));
        assert_eq!(throttle.check(&[1000], 2499), Err(1));
    }

    #[test]
    fn the_bootstrap_creates_promotes_resets_or_leaves_alone() {
        assert_eq!(bootstrap(None), Bootstrap::Create);
        assert_eq!(bootstrap(Some((Role::Admin, true))), Bootstrap::Nothing);
        assert_eq!(
            bootstrap(Some((Role::Customer, true))),
            Bootstrap::Update {
                promote: true,
                reset_password: false
            }
        );
        assert_eq!(
            bootstrap(Some((Role::Admin, false))),
            Bootstrap::Update {
                promote: false,
                reset_password: true
            }
        );
    }
}
