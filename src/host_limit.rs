//! How many requests each host gets in flight: a limit that adapts to the host.
//!
//! A point's series from an archive is thousands of small requests, and the number that can
//! be in flight at once, not bandwidth, sets the time of a run at 20-100 ms per request. So a
//! host starts with many ([`START`]) and grows while it keeps up: until it first pushes back,
//! by one for each answer that came with the limit reached (the limit doubles per round
//! trip, as TCP's slow start); after that, by one for each whole limit's worth of such
//! answers (one more per round trip). A refusal ("slow down", HTTP 429 or 503) brings the
//! limit down to the other requests then out, so a burst of refusals settles it near what
//! the host serves at once; a timeout halves it, at most once per typical request duration.
//! `set_io_concurrency` stays the cap of every host's limit and of all requests together.
//!
//! One [`HostLimit`] per host (scheme, host and port; for S3-like URLs the bucket), kept with
//! the I/O runtime so that a forked child starts afresh with its own.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Requests a host gets in flight before anything is known of it: enough to hide 20-100 ms
/// per request for the chunk reads of a point's series.
pub const START: usize = 256;
/// The fewest a limit falls to: a host that refuses even these is waited for by the retries.
const FLOOR: usize = 4;
/// Before any request completed, the assumed duration of one.
const FIRST_DURATION: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct State {
    limit: usize,
    /// Until the host first pushes back (a refusal or a timeout), the limit grows by one per
    /// answer at the limit rather than per round trip.
    probing: bool,
    in_flight: usize,
    /// Requests completed since the limit last grew, with the limit reached.
    completed_at_limit: usize,
    last_decrease: Option<Instant>,
    /// A moving average of request durations (seconds).
    duration: f64,
    slow_downs: u64,
    /// Requests answered, and the seconds they took to their answers' heads, all told.
    answers: Answers,
}

/// Requests a host answered and how long they took, counted since the process began (or forked):
/// two counts taken around some work tell the latency that work met.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Answers {
    pub count: u64,
    pub seconds: f64,
}

/// The adaptive in-flight limit of one host.
#[derive(Debug)]
pub struct HostLimit {
    state: Mutex<State>,
    freed: tokio::sync::Notify,
}

/// A request's place in flight; released when dropped.
pub struct Slot<'a> {
    host: &'a HostLimit,
    started: Instant,
    refused: bool,
}

impl HostLimit {
    /// A limit starting at `START`, or at `cap` if lower.
    pub fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(State {
                limit: START.min(cap).max(1),
                probing: true,
                in_flight: 0,
                completed_at_limit: 0,
                last_decrease: None,
                duration: FIRST_DURATION.as_secs_f64(),
                slow_downs: 0,
                answers: Answers::default(),
            }),
            freed: tokio::sync::Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a place under the limit (`cap` bounds it however it grew).
    pub async fn acquire(&self, cap: usize) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so that a release in between is not missed.
            freed.as_mut().enable();
            {
                let mut state = self.state();
                state.limit = state.limit.min(cap).max(1);
                if state.in_flight < state.limit {
                    state.in_flight += 1;
                    return Slot {
                        host: self,
                        started: Instant::now(),
                        refused: false,
                    };
                }
            }
            freed.await;
        }
    }

    /// A request to the host timed out: the limit halves, once per typical request duration
    /// (a burst of timeouts is one sign of congestion, not many).
    pub fn slow_down(&self) {
        let mut state = self.state();
        state.slow_downs += 1;
        let now = Instant::now();
        let typical = Duration::from_secs_f64(state.duration);
        if state
            .last_decrease
            .is_some_and(|at| now.duration_since(at) < typical)
        {
            return;
        }
        state.last_decrease = Some(now);
        state.probing = false;
        state.limit = (state.limit / 2).max(FLOOR);
        state.completed_at_limit = 0;
    }

    /// The host refused a request ("slow down", 429 or 503) while `in_flight` requests (this
    /// one among them) were out: it was serving fewer than that, so the limit falls to the
    /// others at most. As the refusals of a burst come back one by one, the limit follows the
    /// requests still out down to about what the host serves at once: a host that takes 16
    /// brings a limit of 256 to ~16 in one round trip, not to the floor.
    fn refused_with(state: &mut State) {
        state.slow_downs += 1;
        state.probing = false;
        let others = state.in_flight.saturating_sub(1);
        state.limit = state.limit.min(others).max(FLOOR);
        state.completed_at_limit = 0;
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.state().limit
    }

    /// How many times the host asked to slow down.
    pub fn slow_downs(&self) -> u64 {
        self.state().slow_downs
    }

    /// The requests the host answered so far, and their seconds to an answer.
    pub fn answers(&self) -> Answers {
        self.state().answers
    }

    fn release(&self, took: Option<Duration>) {
        let mut state = self.state();
        let at_limit = state.in_flight >= state.limit;
        state.in_flight -= 1;
        // A refusal comes back at once: only answers tell how long a request takes.
        if let Some(took) = took {
            state.duration = 0.9 * state.duration + 0.1 * took.as_secs_f64();
            state.answers.count += 1;
            state.answers.seconds += took.as_secs_f64();
        }
        if at_limit && took.is_some() {
            state.completed_at_limit += 1;
            if state.probing || state.completed_at_limit >= state.limit {
                state.completed_at_limit = 0;
                state.limit += 1;
                self.freed.notify_one();
            }
        }
        drop(state);
        self.freed.notify_one();
    }
}

impl Slot<'_> {
    /// The host answered "slow down" (429, 503).
    pub fn refused(mut self) {
        self.refused = true;
        let mut state = self.host.state();
        HostLimit::refused_with(&mut state);
    }

    /// The request timed out.
    pub fn timed_out(mut self) {
        self.refused = true;
        self.host.slow_down();
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let took = (!self.refused).then(|| self.started.elapsed());
        self.host.release(took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn halves_on_slow_down_once_per_request_duration_and_grows_at_the_limit() {
        let host = HostLimit::new(1024);
        assert_eq!(host.limit(), START);
        host.slow_down();
        host.slow_down(); // the same burst of timeouts: halved once
        assert_eq!(host.limit(), START / 2);
        assert_eq!(host.slow_downs(), 2);
        std::thread::sleep(FIRST_DURATION + Duration::from_millis(5));
        host.slow_down();
        assert_eq!(host.limit(), START / 4);
        for _ in 0..10 {
            std::thread::sleep(FIRST_DURATION + Duration::from_millis(5));
            host.slow_down();
        }
        assert_eq!(host.limit(), FLOOR);

        // A limit's worth of requests completed at the limit: one more.
        block_on(async {
            for _ in 0..FLOOR {
                let slots: Vec<_> =
                    futures::future::join_all((0..FLOOR).map(|_| host.acquire(1024))).await;
                drop(slots);
            }
        });
        assert!(host.limit() > FLOOR, "{}", host.limit());
        // The cap bounds it.
        block_on(async { drop(host.acquire(2).await) });
        assert_eq!(host.limit(), 2);
    }

    /// Answers `count` requests one at a time while keeping the limit reached, as a reader
    /// with more requests than places does.
    async fn answer_at_the_limit<'a>(
        host: &'a HostLimit,
        slots: &mut Vec<Slot<'a>>,
        count: usize,
        cap: usize,
    ) {
        for _ in 0..count {
            while slots.len() < host.limit() {
                slots.push(host.acquire(cap).await);
            }
            drop(slots.pop());
        }
    }

    #[test]
    fn grows_by_one_per_answer_at_the_limit_until_the_host_pushes_back() {
        let cap = 4 * START;
        let host = HostLimit::new(cap);
        block_on(async {
            let mut slots = Vec::new();
            // One round trip's answers: the limit doubled.
            answer_at_the_limit(&host, &mut slots, START, cap).await;
            assert_eq!(host.limit(), 2 * START);
            // A refusal ends that: then one more per limit's worth of answers.
            slots.pop().unwrap().refused();
            let limit = host.limit();
            assert!(limit < 2 * START, "{limit}");
            answer_at_the_limit(&host, &mut slots, limit, cap).await;
            assert_eq!(host.limit(), limit + 1);
        });
        // The cap bounds the growth.
        block_on(async { drop(host.acquire(START).await) });
        assert_eq!(host.limit(), START);
    }

    #[test]
    fn refusals_bring_the_limit_to_what_the_host_serves() {
        let host = HostLimit::new(1024);
        block_on(async {
            // 40 out; the host serves 12 and refuses the rest, one by one.
            let mut slots: Vec<_> =
                futures::future::join_all((0..40).map(|_| host.acquire(1024))).await;
            while slots.len() > 12 {
                slots.pop().unwrap().refused();
            }
            assert_eq!(host.limit(), 12);
            drop(slots);
        });
        // However many are out, never below the floor.
        block_on(async { host.acquire(1024).await.refused() });
        assert_eq!(host.limit(), FLOOR);
        // Only the 12 answered count as answers (a refusal tells nothing of the latency).
        assert_eq!(host.answers().count, 12);
    }

    #[test]
    fn answers_count_the_time_to_each_answer() {
        let host = HostLimit::new(64);
        block_on(async {
            let slot = host.acquire(64).await;
            std::thread::sleep(Duration::from_millis(20));
            drop(slot);
            let slot = host.acquire(64).await;
            std::thread::sleep(Duration::from_millis(20));
            slot.timed_out();
        });
        let answers = host.answers();
        assert_eq!(answers.count, 1);
        assert!((0.02..1.0).contains(&answers.seconds), "{answers:?}");
    }

    #[test]
    fn waiters_get_the_places_freed() {
        let host = std::sync::Arc::new(HostLimit::new(2));
        block_on(async {
            let first = host.acquire(2).await;
            let second = host.acquire(2).await;
            let third = host.acquire(2);
            tokio::pin!(third);
            assert!(futures::poll!(third.as_mut()).is_pending());
            drop(first);
            let _third = third.await;
            drop(second);
        });
    }
}
