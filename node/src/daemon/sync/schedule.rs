//! When the sync task steps, and over which scope: the bookkeeping of
//! [`super::service`]'s loop, kept pure so that it can be tested alone.
//!
//! Two kinds of pending work:
//! - `next`: a scope to step over now (dirty paths, paths the applied index
//!   moved, paths a step changed itself);
//! - `retry`: the scope of a step that failed, due after a backoff (250 ms
//!   doubling to 2 s). Watcher events meanwhile join it instead of stepping
//!   at once, so a failing write does not spin on its own events.
//!
//! The invariant: **a failed scope is dropped only by a step that covered
//! it and succeeded.** A successful step over other paths (the applied
//! index moved while the retry waited) leaves the retry pending; otherwise
//! a local change whose offer found no quorum was never proposed again
//! until the 10-minute backstop rescan, while status said `in_sync`.

use std::time::Duration;

use tokio::time::Instant;

use crate::engine::plan::Scope;

pub const RETRY_MIN: Duration = Duration::from_millis(250);
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// How a step ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Done,
    /// Step again now over these paths (the step changed them itself).
    Again(Scope),
    /// Something failed: retry the scope after a backoff.
    Retry,
}

#[derive(Debug)]
pub struct Schedule {
    next: Option<Scope>,
    retry: Option<Retry>,
}

#[derive(Debug)]
struct Retry {
    scope: Scope,
    backoff: Duration,
    at: Instant,
    /// The backoff has run out: the scope is stepped over next.
    due: bool,
}

impl Default for Schedule {
    /// A new schedule starts with a full scan.
    fn default() -> Self {
        Schedule {
            next: Some(Scope::Full),
            retry: None,
        }
    }
}

impl Schedule {
    /// The scope to step over now, if any. A due retry is folded in.
    pub fn take_next(&mut self) -> Option<Scope> {
        let due = match &mut self.retry {
            Some(r) if r.due => {
                r.due = false;
                Some(r.scope.clone())
            }
            _ => None,
        };
        match (self.next.take(), due) {
            (None, d) => d,
            (Some(n), None) => Some(n),
            (Some(n), Some(d)) => Some(n.union(d)),
        }
    }

    /// Records how a step over `ran` ended.
    pub fn after_step(&mut self, ran: &Scope, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Again(more) => self.add_next(more),
            Outcome::Done => {
                if self.retry.as_ref().is_some_and(|r| ran.contains(&r.scope)) {
                    self.retry = None;
                }
            }
            Outcome::Retry => {
                let (scope, backoff) = match self.retry.take() {
                    Some(r) => (r.scope.union(ran.clone()), (r.backoff * 2).min(RETRY_MAX)),
                    None => (ran.clone(), RETRY_MIN),
                };
                self.retry = Some(Retry {
                    scope,
                    backoff,
                    at: now + backoff,
                    due: false,
                });
            }
        }
    }

    /// Paths the watcher reports: now, or with the pending retry.
    pub fn dirty(&mut self, scope: Scope) {
        match &mut self.retry {
            Some(r) => r.scope = std::mem::replace(&mut r.scope, Scope::Full).union(scope),
            None => self.add_next(scope),
        }
    }

    /// Paths to step over now whatever else waits (the applied index moved,
    /// a command asked for a rescan).
    pub fn add_next(&mut self, scope: Scope) {
        self.next = Some(match self.next.take() {
            Some(n) => n.union(scope),
            None => scope,
        });
    }

    /// When the pending retry is due (`None`: none pending, or due already).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry.as_ref().filter(|r| !r.due).map(|r| r.at)
    }

    /// The retry's backoff has run out.
    pub fn retry_due(&mut self) {
        if let Some(r) = &mut self.retry {
            r.due = true;
        }
    }

    /// Whether work is pending (a step to run or a failed scope to retry):
    /// the node does not claim to be in sync meanwhile.
    pub fn pending(&self) -> bool {
        self.next.is_some() || self.retry.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(p: &[&str]) -> Scope {
        Scope::Paths(p.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn starts_with_a_full_scan() {
        let mut s = Schedule::default();
        assert_eq!(s.take_next(), Some(Scope::Full));
        assert_eq!(s.take_next(), None);
        assert!(!s.pending());
    }

    #[test]
    fn a_step_over_other_paths_keeps_the_failed_scope() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.take_next();
        s.after_step(&paths(&["a"]), Outcome::Retry, t0);
        assert_eq!(s.retry_at(), Some(t0 + RETRY_MIN));
        // The applied index moves: a step over "b" runs and succeeds.
        s.add_next(paths(&["b"]));
        let ran = s.take_next().unwrap();
        assert_eq!(ran, paths(&["b"]));
        s.after_step(&ran, Outcome::Done, t0);
        assert!(s.pending(), "the failed scope of 'a' must stay pending");
        s.retry_due();
        assert_eq!(s.take_next(), Some(paths(&["a"])));
        s.after_step(&paths(&["a"]), Outcome::Done, t0);
        assert!(!s.pending());
    }

    #[test]
    fn a_covering_step_that_succeeds_drops_the_retry() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.take_next();
        s.after_step(&paths(&["d/x"]), Outcome::Retry, t0);
        s.after_step(&paths(&["d"]), Outcome::Done, t0);
        assert!(!s.pending());
        s.after_step(&paths(&["d/x"]), Outcome::Retry, t0);
        s.after_step(&Scope::Full, Outcome::Done, t0);
        assert!(!s.pending());
    }

    #[test]
    fn failures_back_off_and_accumulate_their_scopes() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.take_next();
        s.after_step(&paths(&["a"]), Outcome::Retry, t0);
        s.dirty(paths(&["c"]));
        assert_eq!(s.take_next(), None, "events join the waiting retry");
        s.retry_due();
        assert_eq!(s.retry_at(), None);
        let ran = s.take_next().unwrap();
        assert_eq!(ran, paths(&["a", "c"]));
        let mut last = Duration::ZERO;
        for _ in 0..6 {
            s.after_step(&ran, Outcome::Retry, t0);
            let d = s.retry_at().unwrap() - t0;
            assert!(d >= last && d <= RETRY_MAX);
            last = d;
            s.retry_due();
            s.take_next();
        }
        assert_eq!(last, RETRY_MAX);
    }

    #[test]
    fn a_due_retry_joins_the_next_step() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.take_next();
        s.after_step(&paths(&["a"]), Outcome::Retry, t0);
        s.retry_due();
        s.add_next(paths(&["b"]));
        let ran = s.take_next().unwrap();
        assert_eq!(ran, paths(&["a", "b"]));
        s.after_step(&ran, Outcome::Done, t0);
        assert!(!s.pending());
    }

    #[test]
    fn again_steps_at_once_and_keeps_the_retry() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.take_next();
        s.after_step(&paths(&["a"]), Outcome::Retry, t0);
        s.after_step(&paths(&["b"]), Outcome::Again(paths(&["b.conflict"])), t0);
        assert_eq!(s.take_next(), Some(paths(&["b.conflict"])));
        assert!(s.pending());
    }
}
