//! A video's results as users see them: raw frames as the pipeline stored them, plus who each
//! face is and its emotions smoothed over time.
//!
//! Once every segment is done, [`assemble`] reads the stored frames twice: once to learn which
//! tracks exist and which were on screen together, then (after linking the tracks' stored
//! embeddings into people) to smooth each person's emotions and build the summary. The summary
//! keeps the track → person map (`people[].tracks`) and the smoothing it used; frames are never
//! rewritten. [`read_frames`] applies both to any page of frames, reading the frames within the
//! smoothing's reach around the page, so a page's values equal those the summary was built from.
//!
//! [`PeopleSink`] does the same for one-pass analyses that write files (the CLI).

use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};

use crate::ports::{ResultStore, StoreResult};
use crate::{AnalysisSink, SinkError};
use crate::{
    FrameResult, ModelInfo, PeopleConfig, PeopleMap, Smoother, SmoothingConfig, Summary,
    SummaryBuilder, TrackOverlap, TrackProfile, VideoInfo, link_tracks,
};

/// Frames per read while assembling.
const PAGE: usize = 1000;

/// Links the video's tracks into people, smooths each person's emotions and summarises the
/// stored frames.
pub async fn assemble(
    results: &dyn ResultStore,
    video_id: &str,
    has_contempt: bool,
    people: &PeopleConfig,
    smoothing: SmoothingConfig,
) -> StoreResult<Summary> {
    let mut overlap = TrackOverlap::default();
    each_frame(results, video_id, |frame| overlap.observe(&frame)).await?;
    let profiles = results.tracks(video_id).await?;
    let mut annotated = Annotated::new(
        link_tracks(&overlap, &profiles, people),
        smoothing,
        has_contempt,
    );
    each_frame(results, video_id, |frame| {
        annotated.push(frame);
    })
    .await?;
    Ok(annotated.finish().1)
}

/// Raw frames in, in order; out, each with its `person` and `smoothed` (as soon as the
/// smoothing's reach after it has been seen), folded into the summary on the way.
struct Annotated {
    map: PeopleMap,
    smoothing: SmoothingConfig,
    smoother: Smoother,
    summary: SummaryBuilder,
}

impl Annotated {
    fn new(map: PeopleMap, smoothing: SmoothingConfig, has_contempt: bool) -> Self {
        Self {
            map,
            smoothing,
            smoother: Smoother::new(smoothing),
            summary: SummaryBuilder::new(has_contempt),
        }
    }

    fn push(&mut self, mut frame: FrameResult) -> Vec<FrameResult> {
        self.map.annotate(&mut frame);
        let ready = self.smoother.push(frame);
        ready.iter().for_each(|f| self.summary.add(f));
        ready
    }

    /// The last frames, and the summary with people and the smoothing it used.
    fn finish(mut self) -> (Vec<FrameResult>, Summary) {
        let last = self.smoother.finish();
        last.iter().for_each(|f| self.summary.add(f));
        let mut summary = self.summary.finish();
        summary.smoothing_ms = Some(self.smoothing.sigma_ms);
        (last, summary)
    }
}

async fn each_frame(
    results: &dyn ResultStore,
    video_id: &str,
    mut f: impl FnMut(FrameResult),
) -> StoreResult<()> {
    let mut after = None;
    loop {
        let (frames, next) = results.frames(video_id, after, PAGE).await?;
        frames.into_iter().for_each(&mut f);
        match next {
            Some(n) => after = Some(n),
            None => return Ok(()),
        }
    }
}

/// The thumbnail each person gets: the best-quality crop among their tracks'.
pub fn person_thumbnails(summary: &Summary, profiles: &[TrackProfile]) -> Vec<(u32, Vec<u8>)> {
    let map = PeopleMap::from_summary(summary);
    let mut best: std::collections::BTreeMap<u32, &TrackProfile> = Default::default();
    for profile in profiles.iter().filter(|p| p.thumbnail.is_some()) {
        let Some(person) = map.person(profile.track) else {
            continue;
        };
        let entry = best.entry(person).or_insert(profile);
        if profile.quality > entry.quality {
            *entry = profile;
        }
    }
    best.into_iter()
        .filter_map(|(person, p)| Some((person, p.thumbnail.clone()?)))
        .collect()
}

/// Frames with `frame > after`, at most `limit`, as users see them: with `person` and
/// `smoothed` when the video's summary has people (a finished analysis), raw otherwise.
pub async fn read_frames(
    results: &dyn ResultStore,
    video_id: &str,
    summary: Option<&Summary>,
    after: Option<u64>,
    limit: usize,
) -> StoreResult<(Vec<FrameResult>, Option<u64>)> {
    let (page, next) = results.frames(video_id, after, limit).await?;
    let (Some(summary), Some(first), Some(last)) = (summary, page.first(), page.last()) else {
        return Ok((page, next));
    };
    let Some(sigma_ms) = summary.smoothing_ms else {
        return Ok((page, next));
    };
    let smoothing = SmoothingConfig { sigma_ms };
    let reach = smoothing.reach_ms();
    let map = PeopleMap::from_summary(summary);
    let (first, first_ms, last, last_ms) = (first.frame, first.t_ms, last.frame, last.t_ms);

    let before = context_before(results, video_id, first, first_ms, reach).await?;
    let mut after_page = Vec::new();
    if next.is_some() {
        let mut cursor = Some(last);
        while let Some(c) = cursor {
            let (more, more_next) = results.frames(video_id, Some(c), 64).await?;
            let done = more.last().is_none_or(|f| f.t_ms > last_ms + reach);
            after_page.extend(more.into_iter().filter(|f| f.t_ms <= last_ms + reach));
            cursor = if done { None } else { more_next };
        }
    }

    let mut smoother = Smoother::new(smoothing);
    let mut out = Vec::with_capacity(page.len());
    let mut keep = |frames: Vec<FrameResult>| {
        out.extend(
            frames
                .into_iter()
                .filter(|f| (first..=last).contains(&f.frame)),
        )
    };
    for mut frame in before.into_iter().chain(page).chain(after_page) {
        map.annotate(&mut frame);
        keep(smoother.push(frame));
    }
    keep(smoother.finish());
    Ok((out, next))
}

/// The frames within `reach` ms before frame `first` (at `first_ms`), in order. Frames are
/// numbered by the decoder, not by time, so this reads back a guess and widens it until the
/// earliest frame read is out of reach (or the video's start).
async fn context_before(
    results: &dyn ResultStore,
    video_id: &str,
    first: u64,
    first_ms: u64,
    reach: u64,
) -> StoreResult<Vec<FrameResult>> {
    if first == 0 || first_ms == 0 {
        return Ok(Vec::new());
    }
    // 60 frames a second of reach, then four times more at each retry
    let mut back = (reach * 60 / 1000).max(16);
    loop {
        let start = first.saturating_sub(back);
        let mut frames = Vec::new();
        let mut cursor = start.checked_sub(1);
        loop {
            let (page, next) = results
                .frames(video_id, cursor, PAGE.min((first - start) as usize).max(1))
                .await?;
            let reached = page.last().is_none_or(|f| f.frame >= first) || next.is_none();
            frames.extend(page.into_iter().filter(|f| f.frame < first));
            if reached {
                break;
            }
            cursor = next;
        }
        let covered = start == 0 || frames.first().is_some_and(|f| f.t_ms + reach < first_ms);
        if covered {
            frames.retain(|f| f.t_ms + reach >= first_ms);
            return Ok(frames);
        }
        back = back.saturating_mul(4);
    }
}

/// Wraps a one-pass analysis's sinks (the CLI's writers; the worker's [`RunSummary`] when one
/// run analyses a whole video): spools the raw frames to a temporary file and keeps the tracks'
/// profiles, then, at the end, links the tracks into people and replays the frames, annotated
/// and smoothed, to `inner`, with the summary that has people.
pub struct PeopleSink<S> {
    inner: S,
    people: PeopleConfig,
    smoothing: SmoothingConfig,
    has_contempt: bool,
    spool: BufWriter<std::fs::File>,
    overlap: TrackOverlap,
    profiles: std::collections::BTreeMap<u32, TrackProfile>,
}

impl<S: AnalysisSink> PeopleSink<S> {
    pub fn new(
        inner: S,
        people: PeopleConfig,
        smoothing: SmoothingConfig,
        has_contempt: bool,
    ) -> std::io::Result<Self> {
        Ok(Self {
            inner,
            people,
            smoothing,
            has_contempt,
            spool: BufWriter::new(tempfile::tempfile()?),
            overlap: TrackOverlap::default(),
            profiles: Default::default(),
        })
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Keeps only the summary a sink is finished with: what a one-pass analysis built, for a caller
/// that already stored the frames.
#[derive(Debug, Default)]
pub struct RunSummary(pub Option<Summary>);

impl AnalysisSink for RunSummary {
    fn frame(&mut self, _frame: &FrameResult) -> Result<(), SinkError> {
        Ok(())
    }

    fn finish(&mut self, _video: &VideoInfo, summary: &Summary) -> Result<(), SinkError> {
        self.0 = Some(summary.clone());
        Ok(())
    }
}

impl<S: AnalysisSink> AnalysisSink for PeopleSink<S> {
    fn begin(
        &mut self,
        video: &VideoInfo,
        model: &ModelInfo,
        sample_fps: f64,
    ) -> Result<(), SinkError> {
        self.inner.begin(video, model, sample_fps)
    }

    fn frame(&mut self, frame: &FrameResult) -> Result<(), SinkError> {
        self.overlap.observe(frame);
        serde_json::to_writer(&mut self.spool, frame)?;
        self.spool.write_all(b"\n")?;
        Ok(())
    }

    fn track(&mut self, profile: &TrackProfile) -> Result<(), SinkError> {
        self.profiles.insert(profile.track, profile.clone());
        Ok(())
    }

    fn finish(&mut self, video: &VideoInfo, _raw: &Summary) -> Result<(), SinkError> {
        let profiles: Vec<TrackProfile> = self.profiles.values().cloned().collect();
        let mut annotated = Annotated::new(
            link_tracks(&self.overlap, &profiles, &self.people),
            self.smoothing,
            self.has_contempt,
        );
        self.spool.flush()?;
        let file = self.spool.get_mut();
        file.seek(SeekFrom::Start(0))?;
        // the inner writers see the final frames only now; the summary they get has people
        for line in BufReader::new(file.try_clone()?).lines() {
            for f in annotated.push(serde_json::from_str(&line?)?) {
                self.inner.frame(&f)?;
            }
        }
        let (last, summary) = annotated.finish();
        for f in &last {
            self.inner.frame(f)?;
        }
        self.inner.finish(video, &summary)
    }
}
