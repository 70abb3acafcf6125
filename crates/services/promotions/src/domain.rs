//! Promotion rules without IO: what a valid promotion is, when it launches, what is due at a given
//! instant (also after downtime), its status, and how long the scheduler may sleep.
//!
//! Decisions written down here:
//! - **Times are UTC**, cron patterns included, and whole seconds: an occurrence is never
//!   between two seconds.
//! - **Cron patterns** are croner's: five fields (minute to day of week), or six with seconds
//!   first, plus its `L`, `W`, `#` and `@daily`-style nicknames.
//! - **When a schedule begins.** Neither `startsAt` nor `cron`: launch once, now. `startsAt` alone:
//!   launch once at `startsAt` (at once when it is already past). `cron` alone: every occurrence
//!   from the creation on. Both: every occurrence from `startsAt` on. Occurrences before the
//!   creation were never the promotion's, so they are not "missed".
//! - **Missed launches.** A launch that fell due while nobody was running happens once, late. For
//!   a cron promotion that missed several occurrences only the latest one is launched: a customer
//!   gains nothing from three copies of a stale offer.

use chrono::{DateTime, TimeDelta, Utc};
use croner::Cron;

pub const MAX_NAME: usize = 200;
pub const MAX_MESSAGE: usize = 2_000;
pub const MAX_CATEGORY: usize = 100;
pub const MAX_PRODUCTS: usize = 1_000;
pub const MAX_CRON: usize = 200;

/// The longest the scheduler sleeps without looking at the table: it bounds how late a launch is
/// when the wall clock jumps, or when a promotion was created by another instance (whose wake-up
/// does not reach this process).
pub const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a promotion is in its life. Derived from its launch times, never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not launched yet; `nextLaunchAt` says when it will be.
    Scheduled,
    /// A cron promotion that has launched and will launch again at `nextLaunchAt`.
    Active,
    /// Launched, and nothing more to come: a one-off after its launch, or a cron promotion whose
    /// pattern has no further occurrence.
    Launched,
}

impl Status {
    pub fn of(
        last_launched_at: Option<DateTime<Utc>>,
        next_launch_at: Option<DateTime<Utc>>,
    ) -> Status {
        match (last_launched_at, next_launch_at) {
            (None, _) => Status::Scheduled,
            (Some(_), Some(_)) => Status::Active,
            (Some(_), None) => Status::Launched,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "SCHEDULED",
            Status::Active => "ACTIVE",
            Status::Launched => "LAUNCHED",
        }
    }
}

/// A cron pattern, or why it is not one.
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    if text.len() > MAX_CRON {
        return Err(format!("must be at most {MAX_CRON} characters"));
    }
    text.parse::<Cron>()
        .map_err(|e| format!("is not a cron pattern: {e}"))
}

/// `at` rounded down to its second.
fn floor_second(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

/// `at` rounded up to a whole second.
fn ceil_second(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_second(at);
    if floor == at {
        at
    } else {
        floor + TimeDelta::seconds(1)
    }
}

/// The first occurrence of `cron` at or after `at`; `None` when there is none (before croner's
/// year limit).
pub fn occurrence_from(cron: &Cron, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&ceil_second(at), true).ok()
}

/// The first occurrence of `cron` strictly after `at`.
pub fn occurrence_after(cron: &Cron, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&floor_second(at), false).ok()
}

/// The latest occurrence of `cron` at or before `at`.
pub fn occurrence_until(cron: &Cron, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_previous_occurrence(&floor_second(at), true).ok()
}

/// When a promotion created at `created_at` first launches; `None` for a cron pattern that never
/// occurs once the schedule has begun.
pub fn first_launch(
    starts_at: Option<DateTime<Utc>>,
    cron: Option<&Cron>,
    created_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match cron {
        None => Some(starts_at.unwrap_or(created_at)),
        Some(cron) => {
            let begins = starts_at.map_or(created_at, |starts| starts.max(created_at));
            occurrence_from(cron, begins)
        }
    }
}

/// A launch to make now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The occurrence launched (the event's `scheduledFor`; unique per promotion).
    pub occurrence: DateTime<Utc>,
    /// The launch after it, if any.
    pub next: Option<DateTime<Utc>>,
}

/// What a promotion whose next launch is `next` must do at `now`: nothing yet (`None`), or launch
/// one occurrence and then wait for the one after. A cron promotion that missed several
/// occurrences launches only the latest of them.
pub fn due(cron: Option<&Cron>, next: DateTime<Utc>, now: DateTime<Utc>) -> Option<Due> {
    if next > now {
        return None;
    }
    let Some(cron) = cron else {
        return Some(Due {
            occurrence: next,
            next: None,
        });
    };
    let occurrence = occurrence_until(cron, now)
        .filter(|latest| *latest >= next)
        .unwrap_or(next);
    Some(Due {
        occurrence,
        next: occurrence_after(cron, occurrence),
    })
}

/// How long the scheduler sleeps at `now` when the earliest pending launch is `next_due`: until
/// then, at most [`MAX_SLEEP`].
pub fn sleep_for(next_due: Option<DateTime<Utc>>, now: DateTime<Utc>) -> std::time::Duration {
    next_due
        .map(|at| (at - now).to_std().unwrap_or_default())
        .unwrap_or(MAX_SLEEP)
        .min(MAX_SLEEP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 15, h, m, s).unwrap()
    }

    fn cron(text: &str) -> Cron {
        parse_cron(text).unwrap()
    }

    #[test]
    fn a_promotion_with_no_start_and_no_cron_launches_once_at_its_creation() {
        let created = at(10, 0, 0) + TimeDelta::milliseconds(250);
        assert_eq!(first_launch(None, None, created), Some(created));
        assert_eq!(
            due(None, created, created),
            Some(Due {
                occurrence: created,
                next: None
            })
        );
    }

    #[test]
    fn a_promotion_with_a_start_launches_then_and_not_before() {
        let starts = at(12, 0, 0);
        let next = first_launch(Some(starts), None, at(10, 0, 0)).unwrap();
        assert_eq!(next, starts);
        assert_eq!(due(None, next, at(11, 59, 59)), None);
        assert_eq!(
            due(None, next, at(12, 0, 0)),
            Some(Due {
                occurrence: starts,
                next: None
            })
        );
    }

    #[test]
    fn a_start_already_past_at_creation_is_due_at_once() {
        let starts = at(9, 0, 0);
        let next = first_launch(Some(starts), None, at(10, 0, 0)).unwrap();
        assert_eq!(due(None, next, at(10, 0, 0)).unwrap().occurrence, starts);
    }

    #[test]
    fn a_cron_promotion_begins_at_its_creation_or_at_its_start() {
        let hourly = cron("0 * * * *");
        assert_eq!(
            first_launch(None, Some(&hourly), at(10, 20, 0)),
            Some(at(11, 0, 0))
        );
        assert_eq!(
            first_launch(Some(at(14, 30, 0)), Some(&hourly), at(10, 20, 0)),
            Some(at(15, 0, 0))
        );
        // An occurrence exactly at the start counts; one before the creation does not.
        assert_eq!(
            first_launch(Some(at(14, 0, 0)), Some(&hourly), at(10, 20, 0)),
            Some(at(14, 0, 0))
        );
        assert_eq!(
            first_launch(Some(at(8, 0, 0)), Some(&hourly), at(10, 20, 0)),
            Some(at(11, 0, 0))
        );
    }

    #[test]
    fn sub_second_instants_never_make_an_occurrence_between_seconds() {
        let every_second = cron("* * * * * *");
        let created = at(10, 0, 0) + TimeDelta::milliseconds(400);
        assert_eq!(
            first_launch(None, Some(&every_second), created),
            Some(at(10, 0, 1))
        );
        assert_eq!(occurrence_after(&every_second, created), Some(at(10, 0, 1)));
        assert_eq!(occurrence_until(&every_second, created), Some(at(10, 0, 0)));
    }

    #[test]
    fn a_cron_promotion_launches_each_occurrence_and_schedules_the_next() {
        let hourly = cron("0 * * * *");
        assert_eq!(due(Some(&hourly), at(11, 0, 0), at(10, 59, 59)), None);
        assert_eq!(
            due(
                Some(&hourly),
                at(11, 0, 0),
                at(11, 0, 0) + TimeDelta::milliseconds(3)
            ),
            Some(Due {
                occurrence: at(11, 0, 0),
                next: Some(at(12, 0, 0))
            })
        );
    }

    #[test]
    fn after_downtime_a_cron_promotion_launches_only_the_latest_missed_occurrence() {
        let hourly = cron("0 * * * *");
        // Due at 11:00, the platform was down until 14:30: 11, 12, 13 and 14 were missed.
        let late = due(Some(&hourly), at(11, 0, 0), at(14, 30, 0)).unwrap();
        assert_eq!(
            late,
            Due {
                occurrence: at(14, 0, 0),
                next: Some(at(15, 0, 0))
            }
        );
        // And once it is launched nothing else is due before 15:00.
        assert_eq!(due(Some(&hourly), late.next.unwrap(), at(14, 30, 0)), None);
    }

    #[test]
    fn after_downtime_a_one_off_promotion_launches_once_for_its_own_time() {
        let late = due(None, at(11, 0, 0), at(18, 0, 0)).unwrap();
        assert_eq!(late.occurrence, at(11, 0, 0));
        assert_eq!(late.next, None);
    }

    #[test]
    fn a_pattern_that_ends_leaves_no_next_launch() {
        // Only in 2030 (croner's optional year field).
        let only_2030 = cron("0 0 0 15 1 * 2030");
        let first = first_launch(None, Some(&only_2030), at(0, 0, 0) - TimeDelta::hours(1));
        assert_eq!(first, Some(at(0, 0, 0)));
        assert_eq!(
            due(Some(&only_2030), at(0, 0, 0), at(1, 0, 0)),
            Some(Due {
                occurrence: at(0, 0, 0),
                next: None
            })
        );
    }

    #[test]
    fn a_pattern_that_never_occurs_has_no_first_launch() {
        let february_30 = cron("0 0 30 2 *");
        let started = std::time::Instant::now();
        assert_eq!(first_launch(None, Some(&february_30), at(0, 0, 0)), None);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "finding out must be cheap: it runs in a request ({:?})",
            started.elapsed()
        );
    }

    #[test]
    fn cron_patterns_are_checked() {
        for good in ["*/5 * * * *", "0 9 * * MON-FRI", "30 0 9 1 * *", "@daily"] {
            assert!(parse_cron(good).is_ok(), "{good}");
        }
        for bad in ["", "every day", "61 * * * *", "* * * *", "0 0 32 * *"] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
        assert!(parse_cron(&"*".repeat(MAX_CRON + 1)).is_err());
    }

    #[test]
    fn the_status_follows_the_launches() {
        let t = Some(at(10, 0, 0));
        assert_eq!(Status::of(None, t), Status::Scheduled);
        assert_eq!(Status::of(t, t), Status::Active);
        assert_eq!(Status::of(t, None), Status::Launched);
        assert_eq!(Status::Active.as_str(), "ACTIVE");
    }

    #[test]
    fn the_scheduler_sleeps_until_the_next_launch_and_at_most_a_minute() {
        let now = at(10, 0, 0);
        assert_eq!(
            sleep_for(Some(now + TimeDelta::milliseconds(1500)), now),
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(
            sleep_for(Some(now - TimeDelta::seconds(5)), now),
            std::time::Duration::ZERO
        );
        assert_eq!(sleep_for(Some(now + TimeDelta::days(30)), now), MAX_SLEEP);
        assert_eq!(sleep_for(None, now), MAX_SLEEP);
    }
}
