//! Engines for analyses that run at once. An engine runs one analysis at a time (it holds its
//! ONNX sessions for the whole run), so `deepemotion serve` loads one engine per analysis it
//! runs at once (`DEEPEMOTION_ANALYSIS_CONCURRENCY`), and each call takes a free one.

use std::sync::{Arc, Condvar, Mutex};

use domain::{
    AnalysisError, AnalysisOptions, AnalysisOutcome, AnalysisSink, MediaSource, PeopleConfig,
    Probe, SmoothingConfig, VideoAnalyzer,
};

/// Engines of the same configuration, each lent to one call at a time. A call finds one free
/// when no more calls run at once than there are engines, as the local queue ensures; otherwise
/// it waits (on its blocking thread) for one to come back.
pub struct EnginePool {
    engines: Vec<Arc<dyn VideoAnalyzer>>,
    free: Mutex<Vec<usize>>,
    returned: Condvar,
}

impl EnginePool {
    /// One engine as it is; several behind a pool. `engines` must not be empty.
    pub fn of(mut engines: Vec<Arc<dyn VideoAnalyzer>>) -> Arc<dyn VideoAnalyzer> {
        assert!(!engines.is_empty(), "an engine pool needs an engine");
        if engines.len() == 1 {
            return engines.remove(0);
        }
        Arc::new(Self {
            free: Mutex::new((0..engines.len()).rev().collect()),
            engines,
            returned: Condvar::new(),
        })
    }

    /// Runs `f` with a free engine, which goes back to the pool however `f` ends.
    fn with<T>(&self, f: impl FnOnce(&dyn VideoAnalyzer) -> T) -> T {
        // nothing panics while the lock is held, but a poisoned list is still a valid list
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let index = loop {
            match free.pop() {
                Some(index) => break index,
                None => free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner()),
            }
        };
        drop(free);
        let _lent = Lent { pool: self, index };
        f(self.engines[index].as_ref())
    }
}

/// An engine on loan: given back when dropped, also by a panic's unwinding.
struct Lent<'a> {
    pool: &'a EnginePool,
    index: usize,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().unwrap_or_else(|p| p.into_inner());
        free.push(self.index);
        self.pool.returned.notify_one();
    }
}

impl VideoAnalyzer for EnginePool {
    fn probe(&self, source: &MediaSource) -> Result<Probe, AnalysisError> {
        self.with(|engine| engine.probe(source))
    }

    fn frame_times(&self, source: &MediaSource) -> Result<Vec<f64>, AnalysisError> {
        self.with(|engine| engine.frame_times(source))
    }

    fn analyze(
        &self,
        source: &MediaSource,
        options: &AnalysisOptions,
        sink: &mut dyn AnalysisSink,
    ) -> Result<AnalysisOutcome, AnalysisError> {
        self.with(|engine| engine.analyze(source, options, sink))
    }

    // the engines share one configuration: the first answers for all
    fn has_contempt(&self) -> bool {
        self.engines[0].has_contempt()
    }

    fn people(&self) -> &PeopleConfig {
        self.engines[0].people()
    }

    fn smoothing(&self) -> SmoothingConfig {
        self.engines[0].smoothing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Calls that have arrived on any engine, and how many must have arrived before they go on.
    #[derive(Default)]
    struct Meeting {
        arrived: Mutex<(usize, usize)>,
        changed: Condvar,
    }

    /// Counts the calls it serves at once. Each call waits (at most a minute) until the
    /// meeting's number of calls has arrived, and says whether it had.
    struct Engine {
        busy: AtomicUsize,
        most_at_once: AtomicUsize,
        meeting: Arc<Meeting>,
        people: PeopleConfig,
    }

    impl VideoAnalyzer for Engine {
        fn probe(&self, _source: &MediaSource) -> Result<Probe, AnalysisError> {
            let now = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            let mut arrived = self.meeting.arrived.lock().unwrap();
            arrived.0 += 1;
            self.meeting.changed.notify_all();
            let (_arrived, waited) = self
                .meeting
                .changed
                .wait_timeout_while(arrived, Duration::from_secs(60), |(n, target)| n < target)
                .unwrap();
            self.busy.fetch_sub(1, Ordering::SeqCst);
            Err(AnalysisError::Internal(format!(
                "all met: {}",
                !waited.timed_out()
            )))
        }
        fn frame_times(&self, _source: &MediaSource) -> Result<Vec<f64>, AnalysisError> {
            unreachable!()
        }
        fn analyze(
            &self,
            _source: &MediaSource,
            _options: &AnalysisOptions,
            _sink: &mut dyn AnalysisSink,
        ) -> Result<AnalysisOutcome, AnalysisError> {
            unreachable!()
        }
        fn has_contempt(&self) -> bool {
            false
        }
        fn people(&self) -> &PeopleConfig {
            &self.people
        }
        fn smoothing(&self) -> SmoothingConfig {
            SmoothingConfig::default()
        }
    }

    fn engine(meeting: &Arc<Meeting>) -> Arc<Engine> {
        Arc::new(Engine {
            busy: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
            meeting: meeting.clone(),
            people: PeopleConfig::default(),
        })
    }

    #[test]
    fn calls_at_once_each_get_their_own_engine_and_give_it_back() {
        let meeting = Arc::new(Meeting::default());
        let engines: Vec<Arc<Engine>> = (0..3).map(|_| engine(&meeting)).collect();
        let pool = EnginePool::of(
            engines
                .iter()
                .map(|e| e.clone() as Arc<dyn VideoAnalyzer>)
                .collect(),
        );
        let source = MediaSource::File("clip.mp4".into());
        // two rounds of three calls at once: the second finds every engine back in the pool
        for round in 1..=2 {
            meeting.arrived.lock().unwrap().1 = 3 * round;
            std::thread::scope(|s| {
                let calls: Vec<_> = (0..3).map(|_| s.spawn(|| pool.probe(&source))).collect();
                for call in calls {
                    let said = call.join().unwrap().unwrap_err().to_string();
                    assert!(said.ends_with("all met: true"), "round {round}: {said}");
                }
            });
        }
        for engine in &engines {
            assert_eq!(engine.most_at_once.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn one_engine_is_used_as_it_is() {
        let engine: Arc<dyn VideoAnalyzer> = engine(&Arc::default());
        assert!(Arc::ptr_eq(&EnginePool::of(vec![engine.clone()]), &engine));
    }
}
