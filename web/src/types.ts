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

export interface Summary {
  frames_analyzed: number;
  frames_with_faces: number;
  dominant: string | null;
  distribution: Scores;
  mean: Scores;
  tracks: TrackSummary[];
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
  track: number;
  /** `[x, y, w, h]` (the server's shape) or `{x, y, w, h}`, in pixels of the analysed frame. */
  box: [number, number, number, number] | { x: number; y: number; w: number; h: number };
  score: number;
  emotions: Scores;
  dominant: string;
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
