import { emotionColor } from './dom';
import { boxOf, personOf, smoothedDominantOf, smoothedOf, type Frame, type VideoMeta } from './types';

/** Frames further than this from the playback time are not drawn: the face may have moved on. */
const MAX_GAP_SEC = 1.5;

/** The analysed frame nearest to `t` (frames are sorted by time). */
export function nearestFrame(frames: Frame[], t: number): Frame | null {
  let lo = 0;
  let hi = frames.length - 1;
  if (hi < 0) return null;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (frames[mid].video_timestamp_sec < t) lo = mid + 1;
    else hi = mid;
  }
  const after = frames[lo];
  const before = frames[lo - 1];
  const best = before && t - before.video_timestamp_sec < after.video_timestamp_sec - t ? before : after;
  return Math.abs(best.video_timestamp_sec - t) <= MAX_GAP_SEC ? best : null;
}

/**
 * Draws the face boxes of the frame nearest the playback time on a canvas laid over the video.
 * Each box is labelled with its person and smoothed emotion, e.g. "P1 happy 87%". The canvas
 * records what it drew in `data-boxes`, `data-frame` and `data-labels` (one label a line), for
 * tests and curious users.
 */
export class FaceOverlay {
  private pending = 0;

  constructor(
    private readonly video: HTMLVideoElement,
    private readonly canvas: HTMLCanvasElement,
    private readonly frames: Frame[],
    private readonly meta: VideoMeta | null,
  ) {
    const schedule = () => this.schedule();
    for (const type of ['timeupdate', 'seeked', 'loadedmetadata', 'play']) video.addEventListener(type, schedule);
    new ResizeObserver(schedule).observe(video);
  }

  private schedule(): void {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.draw();
      // timeupdate fires only ~4 times a second; follow every painted frame while playing
      if (!this.video.paused && !this.video.ended && this.video.isConnected) this.schedule();
    });
  }

  draw(): void {
    const { video, canvas } = this;
    const cssWidth = video.clientWidth;
    const cssHeight = video.clientHeight;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(cssWidth * dpr);
    canvas.height = Math.round(cssHeight * dpr);
    const ctx = canvas.getContext('2d')!;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssWidth, cssHeight);

    const frame = nearestFrame(this.frames, video.currentTime);
    // boxes are in pixels of the analysed (upright) frame; the browser shows the same upright picture
    const srcWidth = this.meta?.width || video.videoWidth;
    const srcHeight = this.meta?.height || video.videoHeight;
    if (!frame || !srcWidth || !srcHeight || !cssWidth) {
      canvas.dataset.boxes = '0';
      canvas.dataset.frame = '';
      canvas.dataset.labels = '';
      return;
    }
    // the <video> letterboxes its picture (object-fit: contain)
    const scale = Math.min(cssWidth / srcWidth, cssHeight / srcHeight);
    const offsetX = (cssWidth - srcWidth * scale) / 2;
    const offsetY = (cssHeight - srcHeight * scale) / 2;
    ctx.font = '600 13px system-ui, sans-serif';
    ctx.textBaseline = 'bottom';
    const labels: string[] = [];
    for (const face of frame.faces) {
      const box = boxOf(face);
      if (![box.x, box.y, box.w, box.h].every(Number.isFinite)) continue;
      const x = offsetX + box.x * scale;
      const y = offsetY + box.y * scale;
      const dominant = smoothedDominantOf(face);
      const color = emotionColor(dominant);
      ctx.lineWidth = 3;
      ctx.strokeStyle = color;
      ctx.strokeRect(x, y, box.w * scale, box.h * scale);
      const p = smoothedOf(face)[dominant];
      const label = `P${personOf(face)} ${dominant}${p == null ? '' : ` ${Math.round(p * 100)}%`}`;
      labels.push(label);
      const textWidth = ctx.measureText(label).width + 8;
      const labelY = y >= 18 ? y : y + 18;
      ctx.fillStyle = color;
      ctx.fillRect(x - 1.5, labelY - 18, textWidth, 18);
      ctx.fillStyle = '#fff';
      ctx.fillText(label, x + 2.5, labelY - 3);
    }
    canvas.dataset.boxes = String(labels.length);
    canvas.dataset.frame = String(frame.frame_number);
    canvas.dataset.labels = labels.join('\n');
  }
}
