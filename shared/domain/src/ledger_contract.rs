//! What every [`AnalysisLedger`] must do, as one suite of checks run against each of them: the
//! in-memory fake ([`crate::memory::MemoryStore`], below), SQLite (`local-server`) and DynamoDB
//! (`aws-adapters`, against moto). The worker's safety (a video planned once, a segment run by
//! one worker at a time, taken over after a crash, counted done once, a video ended once, a
//! deleted video's run stopped) rests on exactly these rules.
//!
//! Each check is a public async function that takes a fresh, empty store; nothing here needs an
//! async runtime of its own. [`ledger_contract_tests!`](crate::ledger_contract_tests) expands
//! into one `#[tokio::test]` per check in the crate that invokes it:
//!
//! ```text
//! async fn fresh() -> Box<MyStore> { Box::new(MyStore::new()) }
//! domain::ledger_contract_tests!(fresh);
//! ```
//!
//! Lease expiry is checked with leases of a millisecond and a pause of a few more; live leases
//! are a minute long. Nothing depends on how fast the machine is.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use chrono::Utc;

use crate::ports::{
    AnalysisLedger, PlanDecision, ProgressDelta, ResultStore, SegmentClaim, SegmentStatus,
    StoreError, VideoStore,
};
use crate::{
    AnalysisPlan, AnalysisState, Checkpoint, FrameResult, SegmentPlan, TrackProfile, Video,
    VideoInfo, VideoStatus,
};

/// What the checks use of a store: the ledger, and the video and result stores it sits beside.
pub trait LedgerStore: VideoStore + AnalysisLedger + ResultStore {}

impl<T: VideoStore + AnalysisLedger + ResultStore + ?Sized> LedgerStore for T {}

/// One `#[tokio::test]` per check of [`crate::ledger_contract`], each on a fresh store from
/// `$make`: an async function (or closure) taking nothing and returning the store behind
/// anything that dereferences to it (a `Box`, an `Arc`, or a guard that also keeps a temporary
/// directory alive). The calling crate needs `tokio` (with `macros`) among its dependencies.
#[macro_export]
macro_rules! ledger_contract_tests {
    ($make:expr) => {
        $crate::ledger_contract_tests!($make, without_races);
        $crate::ledger_contract_tests!(@each $make;
            concurrent_claims_of_one_segment_have_one_winner,
            concurrent_segments_add_up_and_exactly_one_finishes_last,
        );
    };
    // Everything but the races, for a stand-in that does not isolate concurrent conditional
    // writes (moto applies DynamoDB's one request at a time per call, not atomically across
    // concurrent calls; DynamoDB itself serialises conditional writes to an item).
    ($make:expr, without_races) => {
        $crate::ledger_contract_tests!(@each $make;
            a_plan_is_recorded_once_and_moves_the_video_to_processing,
            a_finished_or_missing_video_gets_no_plan,
            a_live_lease_is_exclusive,
            an_expired_lease_is_taken_over_and_the_run_that_held_it_counts_as_crashed,
            a_released_lease_is_free_at_once_and_not_counted_as_a_crash,
            crashed_runs_and_attempts_add_up_over_claims,
            checkpoints_are_kept_by_the_holder_only_and_resume_the_next_claim,
            a_checkpoint_renews_the_lease,
            checkpoints_add_to_the_videos_progress,
            finishing_a_segment_ends_its_lease_and_counts_it_once,
            the_tally_keeps_the_video_info_of_the_segment_that_reached_the_end,
            finishing_a_segment_needs_a_plan,
            a_video_ends_once,
            deleting_a_video_voids_its_plan_leases_and_results,
            segments_are_listed_by_index_per_video,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let store = ($make)().await;
                $crate::ledger_contract::$check(&*store).await;
            }
        )*
    };
}

const LIVE: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(1);

/// Long enough for a [`SHORT`] lease to have run out, on any clock.
fn let_short_leases_expire() {
    std::thread::sleep(Duration::from_millis(25));
}

fn video(id: &str) -> Video {
    crate::memory::pending_video(id, "ledger-user")
}

/// A 20-second video's plan in `n` equal segments.
fn plan(n: u32) -> AnalysisPlan {
    let duration_ms = 20_000u64;
    let step = duration_ms / u64::from(n);
    AnalysisPlan {
        sample_fps: 5.0,
        start_s: 0.0,
        duration_ms,
        segments: (0..n)
            .map(|index| {
                let start_ms = step * u64::from(index);
                let end_ms = if index + 1 == n {
                    duration_ms
                } else {
                    start_ms + step
                };
                SegmentPlan {
                    index,
                    seek_s: (index > 0).then(|| start_ms as f64 / 1000.0 - 0.02),
                    end_s: (index + 1 < n).then(|| end_ms as f64 / 1000.0 - 0.02),
                    first_frame: start_ms / 40,
                    start_ms,
                    end_ms,
                }
            })
            .collect(),
    }
}

/// A pending video with a recorded plan of `segments`: `PROCESSING`.
async fn planned<S: LedgerStore + ?Sized>(store: &S, id: &str, segments: u32) -> AnalysisPlan {
    store.create_video(&video(id)).await.unwrap();
    let plan = plan(segments);
    assert_eq!(
        store.start_analysis(id, &plan).await.unwrap(),
        PlanDecision::Recorded
    );
    plan
}

async fn claim<S: LedgerStore + ?Sized>(
    store: &S,
    id: &str,
    index: u32,
    owner: &str,
    lease: Duration,
) -> SegmentClaim {
    store.claim_segment(id, index, owner, lease).await.unwrap()
}

fn claimed(attempt: u32, checkpoint: Option<Checkpoint>, crashed_runs: u32) -> SegmentClaim {
    SegmentClaim::Claimed {
        attempt,
        checkpoint,
        crashed_runs,
    }
}

fn at(frame: u64) -> Checkpoint {
    Checkpoint {
        frame,
        t_ms: frame * 40,
    }
}

fn delta(covered_ms: u64, frames: u64) -> ProgressDelta {
    ProgressDelta { covered_ms, frames }
}

fn status(index: u32, done: bool, leased: bool) -> SegmentStatus {
    SegmentStatus {
        index,
        done,
        leased,
    }
}

fn ended(status: VideoStatus, error: Option<&str>, frames: u64) -> AnalysisState {
    AnalysisState {
        status,
        progress: if status == VideoStatus::Completed {
            100
        } else {
            0
        },
        error: error.map(str::to_string),
        frames_analyzed: frames,
        processed_at: Some(Utc::now()),
        ..AnalysisState::pending()
    }
}

async fn analysis<S: LedgerStore + ?Sized>(store: &S, id: &str) -> AnalysisState {
    store.video(id).await.unwrap().expect("the video").analysis
}

/// Runs the futures concurrently on the caller's task (no runtime needed) and returns their
/// outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// The first worker to see an upload records its plan; a duplicate event finds that plan in
/// force, whatever plan it made itself.
pub async fn a_plan_is_recorded_once_and_moves_the_video_to_processing<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    store.create_video(&video("v1")).await.unwrap();
    assert_eq!(store.plan("v1").await.unwrap(), None, "no plan before one");
    assert_eq!(analysis(store, "v1").await.status, VideoStatus::Pending);
    let first = plan(2);
    assert_eq!(
        store.start_analysis("v1", &first).await.unwrap(),
        PlanDecision::Recorded
    );
    let state = analysis(store, "v1").await;
    assert_eq!(
        (
            state.status,
            state.progress,
            state.error,
            state.frames_analyzed
        ),
        (VideoStatus::Processing, 0, None, 0)
    );
    assert_eq!(store.plan("v1").await.unwrap(), Some(first.clone()));
    // a duplicate event, or a second worker: the plan in force wins
    assert_eq!(
        store.start_analysis("v1", &plan(1)).await.unwrap(),
        PlanDecision::Existing(first.clone())
    );
    assert_eq!(store.plan("v1").await.unwrap(), Some(first));
    assert_eq!(analysis(store, "v1").await.status, VideoStatus::Processing);
}

/// A video that has ended (or never existed) is not planned again.
pub async fn a_finished_or_missing_video_gets_no_plan<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    assert_eq!(
        store.start_analysis("missing", &plan(1)).await.unwrap(),
        PlanDecision::Finished
    );
    assert_eq!(store.plan("missing").await.unwrap(), None);
    for (id, status) in [
        ("done", VideoStatus::Completed),
        ("failed", VideoStatus::Failed),
    ] {
        store.create_video(&video(id)).await.unwrap();
        store
            .set_analysis(id, &ended(status, None, 0))
            .await
            .unwrap();
        assert_eq!(
            store.start_analysis(id, &plan(1)).await.unwrap(),
            PlanDecision::Finished,
            "{id}"
        );
        assert_eq!(store.plan(id).await.unwrap(), None, "{id}");
        assert_eq!(analysis(store, id).await.status, status, "{id}");
    }
    // ended after its plan was recorded: finished, not the plan in force
    planned(store, "ended", 1).await;
    assert!(
        store
            .end_analysis("ended", &ended(VideoStatus::Completed, None, 5))
            .await
            .unwrap()
    );
    assert_eq!(
        store.start_analysis("ended", &plan(1)).await.unwrap(),
        PlanDecision::Finished
    );
}

/// While a lease lives, nobody else (not even its holder, claiming again) gets the segment.
pub async fn a_live_lease_is_exclusive<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    planned(store, "v1", 2).await;
    assert_eq!(
        claim(store, "v1", 0, "worker-a", LIVE).await,
        claimed(1, None, 0)
    );
    assert_eq!(
        claim(store, "v1", 0, "worker-b", LIVE).await,
        SegmentClaim::Busy
    );
    assert_eq!(
        claim(store, "v1", 0, "worker-a", LIVE).await,
        SegmentClaim::Busy,
        "a second message for the same segment waits too"
    );
    assert_eq!(
        store.segments("v1").await.unwrap(),
        vec![status(0, false, true)]
    );
    // the other segment is free
    assert_eq!(
        claim(store, "v1", 1, "worker-b", LIVE).await,
        claimed(1, None, 0)
    );
    // a claim needs no plan (the worker claims before it probes)
    store.create_video(&video("v2")).await.unwrap();
    assert_eq!(
        claim(store, "v2", 0, "worker-a", LIVE).await,
        claimed(1, None, 0)
    );
}

/// A lease that ran out without being given back is taken over; the run that held it was
/// killed or crashed, and from then on it can neither checkpoint, finish nor release.
pub async fn an_expired_lease_is_taken_over_and_the_run_that_held_it_counts_as_crashed<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    planned(store, "v1", 1).await;
    assert_eq!(
        claim(store, "v1", 0, "worker-a", SHORT).await,
        claimed(1, None, 0)
    );
    let_short_leases_expire();
    assert_eq!(
        store.segments("v1").await.unwrap(),
        vec![status(0, false, false)],
        "expired"
    );
    assert_eq!(
        claim(store, "v1", 0, "worker-b", LIVE).await,
        claimed(2, None, 1)
    );
    assert!(
        !store
            .checkpoint("v1", 0, "worker-a", &at(10), delta(400, 2), LIVE)
            .await
            .unwrap(),
        "the old holder's checkpoint is refused"
    );
    assert!(matches!(
        store.finish_segment("v1", 0, Some("worker-a"), None).await,
        Err(StoreError::Conflict(_))
    ));
    store.release_segment("v1", 0, "worker-a").await.unwrap();
    assert_eq!(
        claim(store, "v1", 0, "worker-c", LIVE).await,
        SegmentClaim::Busy,
        "the old holder cannot release the new holder's lease"
    );
    assert!(
        store
            .checkpoint("v1", 0, "worker-b", &at(10), delta(400, 2), LIVE)
            .await
            .unwrap()
    );
    assert_eq!(
        store.segments("v1").await.unwrap(),
        vec![status(0, false, true)]
    );
}

/// A run that stopped cleanly (a deadline, a store error) gives its lease back: the segment is
/// free at once, and the run is not counted as crashed. Only the holder can give it back.
pub async fn a_released_lease_is_free_at_once_and_not_counted_as_a_crash<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    planned(store, "v1", 1).await;
    claim(store, "v1", 0, "worker-a", LIVE).await;
    store.release_segment("v1", 0, "worker-b").await.unwrap();
    assert_eq!(
        claim(store, "v1", 0, "worker-c", LIVE).await,
        SegmentClaim::Busy,
        "only the holder releases"
    );
    store.release_segment("v1", 0, "worker-a").await.unwrap();
    assert_eq!(
        store.segments("v1").await.unwrap(),
        vec![status(0, false, false)]
    );
    assert_eq!(
        claim(store, "v1", 0, "worker-c", LIVE).await,
        claimed(2, None, 0)
    );
    // releasing what is not there is fine
    store.release_segment("v1", 7, "worker-c").await.unwrap();
    store
        .release_segment("missing", 0, "worker-c")
        .await
        .unwrap();
}

/// Every claim is an attempt; every run that never gave its lease back is one crashed run,
/// counted once, and the counts add up.
pub async fn crashed_runs_and_attempts_add_up_over_claims<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    store.create_video(&video("v1")).await.unwrap();
    assert_eq!(claim(store, "v1", 0, "a", SHORT).await, claimed(1, None, 0));
    // "a" released cleanly (a store error worth retrying): not a crash
    store.release_segment("v1", 0, "a").await.unwrap();
    assert_eq!(claim(store, "v1", 0, "b", SHORT).await, claimed(2, None, 0));
    // "b" vanished with its lease (killed, or a panic): counted once, and it adds up
    let_short_leases_expire();
    assert_eq!(claim(store, "v1", 0, "c", SHORT).await, claimed(3, None, 1));
    let_short_leases_expire();
    assert_eq!(claim(store, "v1", 0, "d", SHORT).await, claimed(4, None, 2));
    store.release_segment("v1", 0, "d").await.unwrap();
    assert_eq!(
        claim(store, "v1", 0, "e", LIVE).await,
        claimed(5, None, 2),
        "a clean release after crashes adds none"
    );
    // counted per segment
    assert_eq!(claim(store, "v1", 1, "f", LIVE).await, claimed(1, None, 0));
}

/// Only the lease's holder records where the segment got to; the next claim resumes from the
/// latest checkpoint.
pub async fn checkpoints_are_kept_by_the_holder_only_and_resume_the_next_claim<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    planned(store, "v1", 1).await;
    claim(store, "v1", 0, "worker-a", LIVE).await;
    assert!(
        store
            .checkpoint("v1", 0, "worker-a", &at(60), delta(2400, 12), LIVE)
            .await
            .unwrap()
    );
    assert!(
        store
            .checkpoint("v1", 0, "worker-a", &at(120), delta(2400, 12), LIVE)
            .await
            .unwrap(),
        "a later checkpoint replaces the earlier one"
    );
    assert!(
        !store
            .checkpoint("v1", 0, "worker-b", &at(300), delta(5000, 50), LIVE)
            .await
            .unwrap(),
        "not the holder"
    );
    assert!(
        !store
            .checkpoint("v1", 1, "worker-a", &at(300), delta(5000, 50), LIVE)
            .await
            .unwrap(),
        "a segment nobody claimed"
    );
    store.release_segment("v1", 0, "worker-a").await.unwrap();
    assert_eq!(
        claim(store, "v1", 0, "worker-b", LIVE).await,
        claimed(2, Some(at(120)), 0)
    );
}

/// A checkpoint renews the lease, even one that ran out, as long as nobody took it over.
pub async fn a_checkpoint_renews_the_lease<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    planned(store, "v1", 1).await;
    claim(store, "v1", 0, "worker-a", SHORT).await;
    let_short_leases_expire();
    assert!(
        store
            .checkpoint("v1", 0, "worker-a", &at(60), delta(2400, 12), LIVE)
            .await
            .unwrap()
    );
    assert_eq!(
        store.segments("v1").await.unwrap(),
        vec![status(0, false, true)]
    );
    assert_eq!(
        claim(store, "v1", 0, "worker-b", LIVE).await,
        SegmentClaim::Busy
    );
}

/// Checkpoints add video time and frames to the video's progress, which stays below 100 until
/// the analysis ends; refused checkpoints add nothing.
pub async fn checkpoints_add_to_the_videos_progress<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    planned(store, "v1", 2).await; // 20 s
    claim(store, "v1", 0, "worker-a", LIVE).await;
    claim(store, "v1", 1, "worker-b", LIVE).await;
    assert!(
        store
            .checkpoint("v1", 0, "worker-a", &at(125), delta(5000, 26), LIVE)
            .await
            .unwrap()
    );
    let state = analysis(store, "v1").await;
    assert_eq!(
        (state.status, state.progress, state.frames_analyzed),
        (VideoStatus::Processing, 25, 26)
    );
    // another segment's progress adds to the same video
    assert!(
        store
            .checkpoint("v1", 1, "worker-b", &at(375), delta(5000, 24), LIVE)
            .await
            .unwrap()
    );
    assert!(
        !store
            .checkpoint("v1", 0, "worker-c", &at(200), delta(5000, 100), LIVE)
            .await
            .unwrap()
    );
    let state = analysis(store, "v1").await;
    assert_eq!((state.progress, state.frames_analyzed), (50, 50));
    // re-analysed time after a resume can add up past the duration: still not 100
    assert!(
        store
            .checkpoint("v1", 0, "worker-a", &at(250), delta(15_000, 0), LIVE)
            .await
            .unwrap()
    );
    assert_eq!(analysis(store, "v1").await.progress, 99);
    // the final state is the one written at the end
    assert!(
        store
            .end_analysis("v1", &ended(VideoStatus::Completed, None, 50))
            .await
            .unwrap()
    );
    let state = analysis(store, "v1").await;
    assert_eq!(
        (state.status, state.progress, state.frames_analyzed),
        (VideoStatus::Completed, 100, 50)
    );
}

/// The holder marks its segment done (its lease ends with it); a done segment cannot be
/// claimed or checkpointed again, and counting it again (after a crash between marking and
/// counting) counts it once.
pub async fn finishing_a_segment_ends_its_lease_and_counts_it_once<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    planned(store, "v1", 2).await;
    claim(store, "v1", 0, "worker-a", LIVE).await;
    assert!(matches!(
        store.finish_segment("v1", 0, Some("worker-b"), None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        matches!(
            store.finish_segment("v1", 1, Some("worker-a"), None).await,
            Err(StoreError::Conflict(_))
        ),
        "a segment nobody claimed"
    );
    let tally = store
        .finish_segment("v1", 0, Some("worker-a"), None)
        .await
        .unwrap();
    assert_eq!((tally.done, tally.total, tally.video), (1, 2, None));
    assert_eq!(
        store.segments("v1").await.unwrap(),
        vec![status(0, true, false)]
    );
    assert_eq!(
        claim(store, "v1", 0, "worker-b", LIVE).await,
        SegmentClaim::Done
    );
    assert!(
        !store
            .checkpoint("v1", 0, "worker-a", &at(10), delta(400, 2), LIVE)
            .await
            .unwrap(),
        "a done segment takes no more checkpoints"
    );
    let tally = store.finish_segment("v1", 0, None, None).await.unwrap();
    assert_eq!((tally.done, tally.total), (1, 2), "counted once");
    assert_eq!(
        claim(store, "v1", 1, "worker-b", LIVE).await,
        claimed(1, None, 0)
    );
    let tally = store
        .finish_segment("v1", 1, Some("worker-b"), None)
        .await
        .unwrap();
    assert_eq!((tally.done, tally.total), (2, 2));
    assert_eq!(
        store.segments("v1").await.unwrap(),
        vec![status(0, true, false), status(1, true, false)]
    );
}

/// The segment that decoded to the end of the stream reports the video's metadata; the tally
/// keeps it whatever order the segments finish in.
pub async fn the_tally_keeps_the_video_info_of_the_segment_that_reached_the_end<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    planned(store, "v1", 3).await;
    let info = VideoInfo {
        duration_ms: 20_000,
        width: 640,
        height: 360,
        fps: 25.0,
        frame_count: 500,
        codec: "h264".into(),
        rotation: 0,
    };
    for index in 0..3 {
        claim(store, "v1", index, &format!("worker-{index}"), LIVE).await;
    }
    let tally = store
        .finish_segment("v1", 0, Some("worker-0"), None)
        .await
        .unwrap();
    assert_eq!((tally.done, tally.total, tally.video), (1, 3, None));
    let tally = store
        .finish_segment("v1", 2, Some("worker-2"), Some(&info))
        .await
        .unwrap();
    assert_eq!(
        (tally.done, tally.total, tally.video),
        (2, 3, Some(info.clone()))
    );
    let tally = store
        .finish_segment("v1", 1, Some("worker-1"), None)
        .await
        .unwrap();
    assert_eq!((tally.done, tally.total, tally.video), (3, 3, Some(info)));
}

/// Counting a segment done needs the video's plan: without one (never planned, or deleted),
/// `NotFound`.
pub async fn finishing_a_segment_needs_a_plan<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    store.create_video(&video("v1")).await.unwrap();
    claim(store, "v1", 0, "worker-a", LIVE).await;
    assert!(matches!(
        store.finish_segment("v1", 0, None, None).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.finish_segment("v1", 0, Some("worker-a"), None).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.finish_segment("missing", 0, None, None).await,
        Err(StoreError::NotFound)
    ));
}

/// The final state is written once, over `PENDING` (a rejected upload) or `PROCESSING`; a
/// late worker cannot overwrite a video that has ended, nor revive a deleted one.
pub async fn a_video_ends_once<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    store.create_video(&video("rejected")).await.unwrap();
    let failed = ended(VideoStatus::Failed, Some("not a video"), 0);
    assert!(store.end_analysis("rejected", &failed).await.unwrap());
    assert_eq!(analysis(store, "rejected").await, failed);
    let completed = ended(VideoStatus::Completed, None, 99);
    assert!(
        !store.end_analysis("rejected", &completed).await.unwrap(),
        "only a PENDING or PROCESSING video can end"
    );
    assert_eq!(analysis(store, "rejected").await, failed, "unchanged");

    planned(store, "analysed", 1).await;
    assert!(store.end_analysis("analysed", &completed).await.unwrap());
    assert_eq!(analysis(store, "analysed").await, completed);
    assert!(!store.end_analysis("analysed", &failed).await.unwrap());
    assert!(!store.end_analysis("analysed", &completed).await.unwrap());
    assert_eq!(analysis(store, "analysed").await, completed, "unchanged");

    assert!(!store.end_analysis("missing", &completed).await.unwrap());
    assert!(store.video("missing").await.unwrap().is_none());
}

/// Deleting a video mid-analysis takes its plan, leases and results with it: the running worker
/// finds its lease gone at its next checkpoint, cannot finish or end the video, and nothing of
/// another video is touched.
pub async fn deleting_a_video_voids_its_plan_leases_and_results<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    let frame = |n: u64| FrameResult {
        frame: n,
        t_ms: n * 40,
        faces: vec![],
    };
    let track = |n: u32| TrackProfile {
        track: n,
        embedding: vec![0.6, 0.8],
        samples: 1,
        quality: 0.5,
        thumbnail: Some(vec![0xff, 0xd8]),
    };
    for id in ["v1", "v2"] {
        planned(store, id, 2).await;
        claim(store, id, 0, "worker-a", LIVE).await;
        assert!(
            store
                .checkpoint(id, 0, "worker-a", &at(5), delta(200, 1), LIVE)
                .await
                .unwrap()
        );
        store.put_frames(id, &[frame(5)]).await.unwrap();
        store.put_tracks(id, &[track(1)]).await.unwrap();
    }
    store.delete_video("v1").await.unwrap();
    assert!(store.video("v1").await.unwrap().is_none());
    assert_eq!(store.plan("v1").await.unwrap(), None);
    assert_eq!(store.segments("v1").await.unwrap(), vec![]);
    assert!(store.frames("v1", None, 10).await.unwrap().0.is_empty());
    assert!(store.tracks("v1").await.unwrap().is_empty());
    assert!(
        !store
            .checkpoint("v1", 0, "worker-a", &at(10), delta(200, 1), LIVE)
            .await
            .unwrap(),
        "the running worker finds its lease gone"
    );
    assert!(matches!(
        store.finish_segment("v1", 0, Some("worker-a"), None).await,
        Err(StoreError::Conflict(_) | StoreError::NotFound)
    ));
    store.release_segment("v1", 0, "worker-a").await.unwrap();
    assert!(
        !store
            .end_analysis("v1", &ended(VideoStatus::Completed, None, 1))
            .await
            .unwrap()
    );
    assert!(store.video("v1").await.unwrap().is_none(), "not revived");
    assert_eq!(
        store.start_analysis("v1", &plan(1)).await.unwrap(),
        PlanDecision::Finished
    );

    assert_eq!(store.plan("v2").await.unwrap(), Some(plan(2)));
    assert_eq!(
        store.segments("v2").await.unwrap(),
        vec![status(0, false, true)]
    );
    assert_eq!(
        store.frames("v2", None, 10).await.unwrap().0,
        vec![frame(5)]
    );
    assert_eq!(store.tracks("v2").await.unwrap(), vec![track(1)]);
    assert!(
        store
            .checkpoint("v2", 0, "worker-a", &at(10), delta(200, 1), LIVE)
            .await
            .unwrap()
    );
}

/// The ledger lists a video's claimed segments in index order, each done or not and leased or
/// not; other videos' segments are not among them.
pub async fn segments_are_listed_by_index_per_video<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    planned(store, "v1", 12).await;
    planned(store, "v2", 2).await;
    assert_eq!(store.segments("v1").await.unwrap(), vec![]);
    for index in [10, 2, 0] {
        claim(store, "v1", index, &format!("worker-{index}"), LIVE).await;
    }
    claim(store, "v2", 1, "worker-x", LIVE).await;
    store
        .finish_segment("v1", 2, Some("worker-2"), None)
        .await
        .unwrap();
    store.release_segment("v1", 0, "worker-0").await.unwrap();
    assert_eq!(
        store.segments("v1").await.unwrap(),
        vec![
            status(0, false, false),
            status(2, true, false),
            status(10, false, true)
        ]
    );
    assert_eq!(
        store.segments("v2").await.unwrap(),
        vec![status(1, false, true)]
    );
    assert_eq!(store.segments("missing").await.unwrap(), vec![]);
}

/// Workers racing for one segment: exactly one gets it.
pub async fn concurrent_claims_of_one_segment_have_one_winner<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    planned(store, "v1", 1).await;
    let owners: Vec<String> = (0..8).map(|i| format!("worker-{i}")).collect();
    let claims = join_all(
        owners
            .iter()
            .map(|owner| store.claim_segment("v1", 0, owner, LIVE))
            .collect(),
    )
    .await;
    let claims: Vec<SegmentClaim> = claims.into_iter().map(Result::unwrap).collect();
    let winners: Vec<usize> = (0..claims.len())
        .filter(|&i| claims[i] != SegmentClaim::Busy)
        .collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    assert_eq!(claims[winners[0]], claimed(1, None, 0));
    // only the winner holds the lease
    for (i, owner) in owners.iter().enumerate() {
        assert_eq!(
            store
                .checkpoint("v1", 0, owner, &at(5), delta(200, 1), LIVE)
                .await
                .unwrap(),
            i == winners[0],
            "{owner}"
        );
    }
}

/// Segments running in parallel: their progress adds up, and of their concurrent finishes
/// exactly one sees every segment done (the one that assembles the video).
pub async fn concurrent_segments_add_up_and_exactly_one_finishes_last<S>(store: &S)
where
    S: LedgerStore + ?Sized,
{
    let n = 6u32;
    planned(store, "v1", n).await;
    let owners: Vec<String> = (0..n).map(|i| format!("worker-{i}")).collect();
    for (index, owner) in (0..n).zip(&owners) {
        claim(store, "v1", index, owner, LIVE).await;
    }
    let mark = at(5);
    let checkpoints = join_all(
        (0..n)
            .zip(&owners)
            .map(|(index, owner)| {
                store.checkpoint("v1", index, owner, &mark, delta(1000, 10), LIVE)
            })
            .collect(),
    )
    .await;
    assert!(checkpoints.into_iter().all(|held| held.unwrap()));
    let state = analysis(store, "v1").await;
    assert_eq!((state.progress, state.frames_analyzed), (30, 60));

    let tallies = join_all(
        (0..n)
            .zip(&owners)
            .map(|(index, owner)| store.finish_segment("v1", index, Some(owner), None))
            .collect(),
    )
    .await;
    let mut done: Vec<u32> = tallies
        .into_iter()
        .map(|tally| {
            let tally = tally.unwrap();
            assert_eq!(tally.total, n);
            tally.done
        })
        .collect();
    done.sort_unstable();
    assert_eq!(
        done,
        (1..=n).collect::<Vec<_>>(),
        "each finish sees its own count"
    );
}

#[cfg(test)]
mod tests {
    //! The contract over the in-memory fake.

    async fn fresh() -> Box<crate::memory::MemoryStore> {
        Box::default()
    }

    crate::ledger_contract_tests!(fresh);
}
