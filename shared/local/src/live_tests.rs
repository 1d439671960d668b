//! The live-progress ledger wrapper over the SQLite ledger, as `deepemotion serve` pairs them.

use std::sync::Arc;
use std::time::Duration;

use domain::ports::{AnalysisLedger, ProgressDelta, VideoStore};
use domain::{AnalysisPlan, AnalysisState, Checkpoint, VideoStatus};
use http_api::live::{AnnouncingLedger, VideoEvents};

use crate::SqliteStore;

#[tokio::test]
async fn announces_start_checkpoint_and_end_but_not_refused_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    store
        .create_video(&domain::memory::pending_video("v1", "u1"))
        .await
        .unwrap();
    let events = VideoEvents::default();
    let mut heard = events.subscribe();
    let ledger = AnnouncingLedger::new(store.clone(), events);

    ledger
        .start_analysis("v1", &AnalysisPlan::single(5.0, 0.0, 10_000))
        .await
        .unwrap();
    assert_eq!(heard.try_recv().unwrap(), "v1");

    // a checkpoint by someone who does not hold the lease changes nothing: no announcement
    let held = ledger
        .checkpoint(
            "v1",
            0,
            "nobody",
            &Checkpoint {
                frame: 3,
                t_ms: 600,
            },
            ProgressDelta {
                covered_ms: 600,
                frames: 3,
            },
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(!held);
    assert!(heard.try_recv().is_err());

    let mut done = AnalysisState::pending();
    done.status = VideoStatus::Failed;
    done.error = Some("stopped".into());
    assert!(ledger.end_analysis("v1", &done).await.unwrap());
    assert_eq!(heard.try_recv().unwrap(), "v1");
    // ending twice is refused by the store, and nothing is announced
    assert!(!ledger.end_analysis("v1", &done).await.unwrap());
    assert!(heard.try_recv().is_err());
}
