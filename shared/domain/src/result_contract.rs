//! What every [`ResultStore`] must do with frames, as one suite of checks run against each of
//! them: the in-memory fake (below), SQLite (`local-server`) and DynamoDB (`aws-adapters`,
//! against moto), whatever they keep frames in. DynamoDB keeps the frames of a chunk of frame
//! numbers in one item ([`ResultStore::frames_per_chunk`]), so the checks put frames on both
//! sides of chunk boundaries; for a store without chunks they use 300, DynamoDB's size.
//!
//! [`result_contract_tests!`](crate::result_contract_tests) expands into one `#[tokio::test]`
//! per check, as [`crate::ledger_contract_tests!`] does.

use std::collections::BTreeMap;

use crate::ports::ResultStore;
use crate::{EmotionLabel, EmotionScores, FaceBox, FaceResult, FrameResult, Landmarks};

/// One `#[tokio::test]` per check of [`crate::result_contract`], each on a fresh store from
/// `$make` (as for [`crate::ledger_contract_tests!`]).
#[macro_export]
macro_rules! result_contract_tests {
    ($make:expr) => {
        $crate::result_contract_tests!(@each $make;
            pages_are_exact_by_frame_across_chunks,
            rewritten_frames_are_kept_once_and_nothing_is_lost,
            frames_read_back_as_the_same_json,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let store = ($make)().await;
                $crate::result_contract::$check(&*store).await;
            }
        )*
    };
}

fn chunk_size<S: ResultStore + ?Sized>(store: &S) -> u64 {
    store.frames_per_chunk().unwrap_or(300)
}

/// A frame with one face whose numbers depend on `version`, so that a rewrite shows.
pub fn frame(n: u64, version: u32) -> FrameResult {
    let mut emotions = EmotionScores::new(false);
    let v = f64::from(version);
    emotions.set(EmotionLabel::Happy, 0.7);
    emotions.set(EmotionLabel::Sad, 0.2 - 0.01 * (version % 10) as f32);
    emotions.set(EmotionLabel::Neutral, 0.1 + 0.01 * (version % 10) as f32);
    FrameResult {
        frame: n,
        t_ms: n * 1000 / 30,
        faces: vec![FaceResult {
            track: 1 + version,
            person: None,
            bbox: FaceBox {
                x: 100.0 + (n % 50) as f64 + v,
                y: 50.5,
                w: 80.0,
                h: 96.3,
            },
            score: 0.9871,
            landmarks: Landmarks([
                [120.0, 80.0],
                [150.5, 80.1],
                [135.0, 100.0],
                [122.2, 120.0],
                [148.0, 120.0],
            ]),
            dominant: emotions.dominant(),
            emotions,
            smoothed: None,
            smoothed_dominant: None,
        }],
    }
}

/// Every frame after `after`, following `next` from page to page of `limit`.
async fn all_pages<S: ResultStore + ?Sized>(
    store: &S,
    id: &str,
    after: Option<u64>,
    limit: usize,
) -> Vec<FrameResult> {
    let mut all = Vec::new();
    let mut cursor = after;
    loop {
        let (page, next) = store.frames(id, cursor, limit).await.unwrap();
        assert!(page.len() <= limit);
        all.extend(page);
        match next {
            Some(n) => {
                assert_eq!(
                    Some(n),
                    all.last().map(|f| f.frame),
                    "next is the last frame"
                );
                cursor = Some(n);
            }
            None => return all,
        }
    }
}

fn numbers(frames: &[FrameResult]) -> Vec<u64> {
    frames.iter().map(|f| f.frame).collect()
}

/// A page holds exactly the frames after the cursor, in order, at most `limit`, and `next` is
/// given exactly when more remain: from a chunk's last frame, its first, a frame not stored, with
/// pages of one frame, of a few, and larger than a chunk.
pub async fn pages_are_exact_by_frame_across_chunks<S: ResultStore + ?Sized>(store: &S) {
    let n = chunk_size(store);
    // every 7th frame of three chunks, and the frames either side of each boundary
    let mut stored: Vec<u64> = (0..3 * n).step_by(7).collect();
    stored.extend([n - 1, n, n + 1, 2 * n - 1, 2 * n, 3 * n - 1]);
    stored.sort_unstable();
    stored.dedup();
    // written a chunk at a time, as the worker does, and the last chunk in two halves
    for chunk in 0..3 {
        let mine: Vec<FrameResult> = stored
            .iter()
            .filter(|f| **f / n == chunk)
            .map(|f| frame(*f, 0))
            .collect();
        let half = if chunk == 2 {
            mine.len() / 2
        } else {
            mine.len()
        };
        store.put_frames("v1", &mine[..half]).await.unwrap();
        store.put_frames("v1", &mine[half..]).await.unwrap();
    }
    store.put_frames("v2", &[frame(5, 0)]).await.unwrap();

    let afters = [
        None,
        Some(0),
        Some(n - 2),
        Some(n - 1),
        Some(n),
        Some(n + 3),
        Some(2 * n - 1),
        Some(3 * n - 2),
        Some(3 * n - 1),
        Some(10 * n),
    ];
    for after in afters {
        let rest: Vec<u64> = stored
            .iter()
            .copied()
            .filter(|f| after.is_none_or(|a| *f > a))
            .collect();
        for limit in [1, 2, 25, n as usize + 5, 10_000] {
            let (page, next) = store.frames("v1", after, limit).await.unwrap();
            let expected: Vec<u64> = rest.iter().copied().take(limit).collect();
            assert_eq!(numbers(&page), expected, "after {after:?}, limit {limit}");
            let more = rest.len() > limit;
            assert_eq!(
                next,
                more.then(|| expected.last().copied()).flatten(),
                "after {after:?}, limit {limit}"
            );
        }
        for limit in [1, 3, n as usize] {
            assert_eq!(
                numbers(&all_pages(store, "v1", after, limit).await),
                rest,
                "every page after {after:?} by {limit}"
            );
        }
    }
    assert_eq!(numbers(&all_pages(store, "v2", None, 10).await), vec![5]);
    assert!(store.frames("v3", None, 10).await.unwrap().0.is_empty());
    assert_eq!(
        store.frames("v1", Some(u64::MAX), 10).await.unwrap(),
        (vec![], None)
    );
}

/// Writing frames again keeps one copy of each, the last written: the same batch twice, a
/// frame twice in one batch, an overlapping range, and a resumed run that writes the rest of a
/// chunk after its checkpoint, mid-chunk, loses nothing written before.
pub async fn rewritten_frames_are_kept_once_and_nothing_is_lost<S: ResultStore + ?Sized>(
    store: &S,
) {
    let n = chunk_size(store);
    let mut expected: BTreeMap<u64, FrameResult> = BTreeMap::new();
    let mut write = async |frames: Vec<FrameResult>| {
        store.put_frames("v1", &frames).await.unwrap();
        for f in frames {
            expected.insert(f.frame, f);
        }
    };
    // frames 5 a second of 30: every 6th of 300 (fewer apart in smaller chunks)
    let step = (n / 50).max(1) as usize;
    let (checkpoint, written_to) = (n + n / 5, n + 2 * n / 5);
    // a run writes the first chunk and the start of the second, then is killed after a
    // checkpoint mid-chunk
    let first: Vec<FrameResult> = (0..n).step_by(step).map(|f| frame(f, 0)).collect();
    write(first.clone()).await;
    write(
        (n..=checkpoint)
            .step_by(step)
            .map(|f| frame(f, 0))
            .collect(),
    )
    .await;
    // it had written past the checkpoint too
    write(
        (checkpoint + 1..written_to)
            .step_by(step)
            .map(|f| frame(f, 0))
            .collect(),
    )
    .await;
    // the resumed run writes again from the checkpoint, to the end of the next chunk
    write(
        (checkpoint + 1..3 * n)
            .step_by(step)
            .map(|f| frame(f, 1))
            .collect(),
    )
    .await;
    // the same batch again; an overlapping range across a boundary; a frame twice in a batch
    write(first).await;
    write(
        (n - n / 10..n + n / 10)
            .step_by(step)
            .map(|f| frame(f, 2))
            .collect(),
    )
    .await;
    let mut twice = vec![frame(2 * n + 6, 3), frame(2 * n + 12, 3)];
    twice.push(frame(2 * n + 6, 4));
    store.put_frames("v1", &twice).await.unwrap();
    expected.insert(2 * n + 6, frame(2 * n + 6, 4));
    expected.insert(2 * n + 12, frame(2 * n + 12, 3));

    let all = all_pages(store, "v1", None, 40).await;
    let expected: Vec<FrameResult> = expected.into_values().collect();
    assert_eq!(numbers(&all), numbers(&expected), "each frame once");
    assert_eq!(
        serde_json::to_string(&all).unwrap(),
        serde_json::to_string(&expected).unwrap(),
        "the last write of each frame"
    );
}

/// Frames read back as the JSON they were written as: the API serves them as they come.
pub async fn frames_read_back_as_the_same_json<S: ResultStore + ?Sized>(store: &S) {
    let mut frames: Vec<FrameResult> = (0..40).map(|f| frame(f * 7, f as u32)).collect();
    // several faces, contempt, and the fields a finished analysis adds
    let mut extra = frames[3].faces[0].clone();
    extra.track = 9;
    extra.person = Some(2);
    extra.bbox.x = 1234.5;
    extra.emotions.set(EmotionLabel::Contempt, 0.000_123);
    extra.smoothed = Some(extra.emotions);
    extra.smoothed_dominant = Some(EmotionLabel::Happy);
    frames[3].faces.push(extra);
    frames[5].faces.clear();
    store.put_frames("v1", &frames).await.unwrap();
    let back = all_pages(store, "v1", None, 1000).await;
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        serde_json::to_string(&frames).unwrap()
    );
}

#[cfg(test)]
mod tests {
    //! The contract over the in-memory fake, with and without chunks.

    mod unchunked {
        async fn fresh() -> Box<crate::memory::MemoryStore> {
            Box::default()
        }

        crate::result_contract_tests!(fresh);
    }

    mod chunked {
        async fn fresh() -> Box<crate::memory::MemoryStore> {
            Box::new(crate::memory::MemoryStore::chunked(64))
        }

        crate::result_contract_tests!(fresh);
    }
}
