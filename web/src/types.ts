export type Status = 'PENDING' | 'PROCESSING' | 'COMPLETED' | 'FAILED';

/** Scores keyed by emotion label, e.g. `{ happy: 0.9, sad: 0.02 }`. */
export type Scores = Record<string, number>;

export interface User {
  id: string;
  username: string;
  email: string;
}

export interface LoginResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
}

export interface VideoMeta {
  duration_ms: number;
  width: number;
  height: number;
  fps: number;
  frame_count: number;
  codec: string;
  rotation: number;
}

export interface TrackSummary {
  track: number;
  first_ms: number;
  last_ms: number;
  frames: number;
  dominant: string;
  distribution: Scores;
  mean: Scores;
}

/** One person: one or more tracks linked by their face embeddings, over the smoothed series. */
export interface PersonSummary {
  person: number;
  tracks: number[];
  first_ms: number;
  last_ms: number;
  frames: number;
  dominant: string;
  distribution: Scores;
  mean: Scores;
}

export interface Summary {
  frames_analyzed: number;
  frames_with_faces: number;
  dominant: string | null;
  distribution: Scores;
  mean: Scores;
  tracks: TrackSummary[];
  /** Absent or empty in results stored before people were linked: see `peopleOf`. */
  people?: PersonSummary[];
  timeline: { second: number; frames: number; mean: Scores }[];
}

export interface Video {
  id: string;
  title: string;
  filename: string;
  s3_key: string;
  status: Status;
  progress: number;
  error: string | null;
  duration_seconds: number | null;
  frame_count: number | null;
  summary: Summary | null;
  uploaded_at: string;
  processed_at: string | null;
  video_url: string | null;
  video: VideoMeta | null;
}

export interface Face {
  /** A continuous run of one face. */
  track: number;
  /** 1-based, stable for the whole video (one or more tracks); absent from older results: see `personOf`. */
  person?: number;
  /** `[x, y, w, h]` (the server's shape) or `{x, y, w, h}`, in pixels of the analysed frame. */
  box: [number, number, number, number] | { x: number; y: number; w: number; h: number };
  score: number;
  /** The model's raw output for this frame. */
  emotions: Scores;
  dominant: string;
  /** `emotions` smoothed over time per person (same labels); absent from older results. */
  smoothed?: Scores;
  /** The argmax of `smoothed`; absent from older results. */
  smoothed_dominant?: string;
}

export interface Frame {
  frame_number: number;
  video_timestamp_sec: number;
  emotions: string[];
  confidences: number[];
  faces: Face[];
}

export interface VideoDetail extends Video {
  frames: Frame[];
  frames_next: string | null;
}

export interface UploadTicket {
  video_id: string;
  upload_url: string;
  s3_key: string;
  method: string;
  headers: Record<string, string>;
  expires_at: string;
}

export interface ProcessingUpdate {
  video_id: string;
  status: Status;
  progress: number;
  error?: string | null;
}

export const EMOTIONS = ['angry', 'disgust', 'fear', 'happy', 'neutral', 'sad', 'surprised'] as const;

export const isActive = (s: Status): boolean => s === 'PENDING' || s === 'PROCESSING';

// Results stored before people were linked lack `person`, `smoothed`, `smoothed_dominant` and
// `summary.people` (or have it empty): these read them with the fallbacks (the track, the raw
// scores, one person per track).

export const personOf = (face: Face): number => face.person ?? face.track;
export const smoothedOf = (face: Face): Scores => face.smoothed ?? face.emotions;
export const smoothedDominantOf = (face: Face): string => face.smoothed_dominant ?? face.dominant;

/** Whether the summary has people of its own (older ones have none, or an empty list, beside their tracks). */
export const hasPeople = (summary: Summary): boolean => !!summary.people?.length;

/** The people of a summary; for older summaries, one person per track. */
export function peopleOf(summary: Summary): PersonSummary[] {
  return hasPeople(summary)
    ? summary.people!
    : summary.tracks.map(({ track, ...rest }) => ({ person: track, tracks: [track], ...rest }));
}

export function boxOf(face: Face): { x: number; y: number; w: number; h: number } {
  const b = face.box;
  return Array.isArray(b) ? { x: b[0], y: b[1], w: b[2], h: b[3] } : b;
}

/** The frame's main face, as the server picks it: the largest box (the last of equals). */
export function mainFace(frame: Frame): Face | null {
  let best: Face | null = null;
  let bestArea = -Infinity;
  for (const face of frame.faces) {
    const { w, h } = boxOf(face);
    const area = w * h || 0;
    if (area >= bestArea) [best, bestArea] = [face, area];
  }
  return best;
}
