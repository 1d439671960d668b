import type uPlot from 'uplot';
import { Api } from './api';
import { emotionSeries, timelineChart, type Person } from './chart';
import { argmax, download, emotionColor, formatDate, formatSeconds, h } from './dom';
import { FaceOverlay } from './overlay';
import { EMOTIONS, hasPeople, isActive, peopleOf, type Scores, type Summary, type Video, type VideoDetail } from './types';

export interface DetailView {
  root: HTMLElement;
  /** Shows a live status/progress update of this video. */
  status(video: Video): void;
  destroy(): void;
}

/** The seven labels first, in their usual order, then any other label the analysis produced. */
function labelsOf(video: VideoDetail): string[] {
  const seen = new Set<string>(EMOTIONS);
  for (const f of video.frames)
    for (const face of f.faces) for (const l of Object.keys({ ...face.emotions, ...face.smoothed })) seen.add(l);
  return [...seen];
}

const percent = (p: number) => `${Math.round(p * 100)}%`;
const timeRange = (r: { first_ms: number; last_ms: number }) =>
  `${formatSeconds(r.first_ms / 1000)}–${formatSeconds(r.last_ms / 1000)}`;

export function detailView(
  api: Api,
  video: VideoDetail,
  on: { renamed: (v: Video) => void; deleted: (id: string) => void },
): DetailView {
  let chart: uPlot | null = null;
  // person thumbnails need the token: fetched as blobs, shown through object URLs that the view
  // releases (and whose pending fetches it cancels) when it is torn down
  const thumbnails = new AbortController();
  const objectUrls: string[] = [];
  const thumbnail = (person: number): HTMLElement => {
    const placeholder = h('span', { className: 'thumb none', 'aria-hidden': 'true' });
    api.personThumbnail(video.id, person, thumbnails.signal).then(
      (blob) => {
        if (thumbnails.signal.aborted) return;
        if (!blob) {
          placeholder.title = 'No picture';
          return;
        }
        const url = URL.createObjectURL(blob);
        objectUrls.push(url);
        placeholder.replaceWith(h('img', {
          className: 'thumb', src: url, alt: `Person ${person}`, width: 48, height: 48, 'data-testid': 'person-thumbnail',
        }));
      },
      (error) => {
        if (!thumbnails.signal.aborted) console.warn('thumbnail of person', person, error);
      },
    );
    return placeholder;
  };
  const safeName = video.title.replace(/[^\w.-]+/g, '_') || 'video';

  // ---- header: title, status, actions ----
  const title = h('h2', { className: 'detail-title', 'data-testid': 'detail-title' }, video.title);
  const badge = h('span', { className: 'badge', 'data-testid': 'detail-status' });
  const progress = h('progress', { max: 100, 'data-testid': 'detail-progress' });
  const showStatus = (v: Video) => {
    badge.textContent = isActive(v.status) ? `${v.status} ${v.progress}%` : v.status;
    badge.className = `badge ${v.status.toLowerCase()}`;
    progress.value = v.progress;
    progress.hidden = !isActive(v.status);
  };
  showStatus(video);

  const renameInput = h('input', { value: video.title, maxLength: 200, required: true, 'data-testid': 'rename-input' });
  const renameError = h('span', { className: 'message error' });
  const renameForm: HTMLFormElement = h(
    'form',
    {
      className: 'rename',
      hidden: true,
      'data-testid': 'rename-form',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        try {
          const updated = await api.rename(video.id, renameInput.value.trim());
          video.title = updated.title;
          title.textContent = updated.title;
          renameForm.hidden = true;
          on.renamed(updated);
        } catch (error) {
          renameError.textContent = (error as Error).message;
        }
      },
    },
    renameInput,
    h('button', { type: 'submit', className: 'primary', 'data-testid': 'rename-save' }, 'Save'),
    h('button', { type: 'button', onclick: () => (renameForm.hidden = true) }, 'Cancel'),
    renameError,
  );

  const actionError = h('p', { className: 'message error', hidden: true, role: 'alert' });
  const act = (fn: () => Promise<void>) => async () => {
    actionError.hidden = true;
    try {
      await fn();
    } catch (error) {
      actionError.textContent = (error as Error).message;
      actionError.hidden = false;
    }
  };
  const done = video.status === 'COMPLETED';
  const actions = h(
    'div',
    { className: 'actions' },
    h('button', {
      type: 'button', 'data-testid': 'rename',
      onclick: () => { renameForm.hidden = false; renameInput.value = video.title; renameInput.focus(); },
    }, 'Rename'),
    h('button', {
      type: 'button', 'data-testid': 'export-csv', disabled: !done,
      onclick: act(async () => download(await api.csv(video.id), `${safeName}.csv`)),
    }, 'Export CSV'),
    h('button', {
      type: 'button', 'data-testid': 'export-json', disabled: !done,
      onclick: () => download(new Blob([JSON.stringify(video.frames, null, 1)], { type: 'application/json' }), `${safeName}.frames.json`),
    }, 'Export JSON'),
    h('button', {
      type: 'button', className: 'danger', 'data-testid': 'delete',
      onclick: act(async () => {
        if (!confirm(`Delete “${video.title}” and its analysis? This cannot be undone.`)) return;
        await api.remove(video.id);
        on.deleted(video.id);
      }),
    }, 'Delete'),
  );

  // ---- player with the face boxes over it ----
  const player = h('video', { controls: true, preload: 'metadata', playsInline: true, src: api.streamUrl(video), 'data-testid': 'player' });
  // deployments without the stream route still have the presigned URL
  player.addEventListener('error', () => {
    if (video.video_url && player.src !== video.video_url) player.src = video.video_url;
  });
  const canvas = h('canvas', { className: 'overlay', 'data-testid': 'overlay', 'data-boxes': 0 });
  new FaceOverlay(player, canvas, video.frames, video.video);

  const root = h(
    'article',
    { className: 'detail', 'data-testid': 'video-detail', 'data-video-id': video.id },
    h('header', { className: 'detail-head' },
      h('div', {}, title, h('div', { className: 'detail-meta' },
        badge, progress,
        video.duration_seconds != null && h('span', {}, formatSeconds(video.duration_seconds)),
        video.video && h('span', {}, `${video.video.width}×${video.video.height}`),
        h('span', {}, `uploaded ${formatDate(video.uploaded_at)}`),
      )),
      actions,
    ),
    renameForm,
    actionError,
    video.error && h('p', { className: 'message error', 'data-testid': 'detail-error' }, video.error),
    h('div', { className: 'player' }, player, canvas),
  );

  if (done && video.summary) {
    const labels = labelsOf(video);
    const chartBox = h('div', { className: 'chart', 'data-testid': 'emotion-chart', 'data-series': labels.length });
    const people = peopleOf(video.summary);
    let person: Person = 'main';
    const rawToggle = h('input', { type: 'checkbox', 'data-testid': 'raw-toggle', onchange: () => draw() });
    // the smoothed series (per person, over time) unless "Raw": the model's output of each frame
    const draw = () => {
      const raw = rawToggle.checked;
      chart?.destroy();
      chartBox.replaceChildren();
      chart = timelineChart(chartBox, labels, emotionSeries(video.frames, labels, person, raw), () => player.currentTime,
        (t) => (player.currentTime = t));
      chartBox.dataset.person = String(person);
      chartBox.dataset.mode = raw ? 'raw' : 'smoothed';
    };
    const personSelect = h(
      'select',
      {
        'data-testid': 'person-select',
        onchange: (e: Event) => {
          const v = (e.target as HTMLSelectElement).value;
          person = v === 'main' ? 'main' : Number(v);
          draw();
        },
      },
      h('option', { value: 'main' }, 'Main face of each frame'),
      people.map((p) => h('option', { value: p.person }, `Person ${p.person} (${timeRange(p)})`)),
    );
    root.append(
      h('section', { className: 'timeline' },
        h('div', { className: 'section-head' }, h('h3', {}, 'Emotions over time'),
          h('div', { className: 'chart-controls' },
            h('label', {}, 'Follow ', personSelect),
            h('label', { title: 'Show the model’s output for each frame instead of the series smoothed over time' },
              rawToggle, ' Raw'))),
        chartBox,
        dominantStrip(video.summary),
      ),
      summaryView(video.summary, hasPeople(video.summary) ? thumbnail : null),
    );
    // uPlot measures its container, so draw once the view is in the document
    requestAnimationFrame(draw);
    player.addEventListener('timeupdate', () => chart?.redraw(false, false));
  } else if (isActive(video.status)) {
    root.append(h('p', { className: 'empty', 'data-testid': 'detail-pending' }, 'The analysis is running; the results appear here when it is done.'));
  }

  return {
    root,
    status: showStatus,
    destroy: () => {
      chart?.destroy();
      thumbnails.abort();
      for (const url of objectUrls.splice(0)) URL.revokeObjectURL(url);
      player.pause();
      player.removeAttribute('src');
      player.load(); // releases the connection of the stream
    },
  };
}

/** The dominant emotion of each second, as a coloured strip that tests and people can read. */
function dominantStrip(summary: Summary): HTMLElement {
  return h(
    'ol',
    { className: 'dominant-timeline', 'data-testid': 'dominant-timeline', 'aria-label': 'Dominant emotion per second' },
    summary.timeline.map((entry) => {
      const label = entry.frames ? argmax(entry.mean) : null;
      return h('li', {
        'data-second': entry.second,
        'data-emotion': label ?? 'none',
        title: `${entry.second}s: ${label ?? 'no face'}`,
        style: `background:${label ? emotionColor(label) : 'transparent'}`,
      }, h('span', {}, label ?? '–'));
    }),
  );
}

function bars(scores: Scores, testid: string): HTMLElement {
  const rows = Object.entries(scores).sort((a, b) => b[1] - a[1]);
  return h(
    'table',
    { className: 'bars', 'data-testid': testid },
    h('tbody', {}, rows.map(([label, p]) =>
      h('tr', { 'data-emotion': label },
        h('th', { scope: 'row' }, label),
        h('td', { className: 'bar-cell' }, h('span', { className: 'bar', style: `width:${(p * 100).toFixed(1)}%;background:${emotionColor(label)}` })),
        h('td', { className: 'num' }, percent(p)),
      ))),
  );
}

/**
 * The summary of the whole video, and its people: each with a picture of the face (`thumbnail`,
 * unless the result has no people of its own, i.e. predates them), tracks, time seen, dominant emotion.
 */
function summaryView(summary: Summary, thumbnail: ((person: number) => HTMLElement) | null): HTMLElement {
  const people = peopleOf(summary);
  return h(
    'section',
    { className: 'summary', 'data-testid': 'summary' },
    h('h3', {}, 'Summary'),
    h('p', {}, 'Dominant emotion: ',
      h('strong', { className: `emotion ${summary.dominant ?? ''}`, 'data-testid': 'summary-dominant' }, summary.dominant ?? 'no faces found'),
      ` · ${summary.frames_with_faces} of ${summary.frames_analyzed} analysed frames show a face`),
    h('div', { className: 'summary-grid' },
      h('div', {}, h('h4', {}, 'Share of frames by dominant emotion'), bars(summary.distribution, 'distribution')),
      h('div', {}, h('h4', {}, 'Mean probability'), bars(summary.mean, 'mean')),
    ),
    people.length > 0 &&
      h('table', { className: 'people', 'data-testid': 'people' },
        h('caption', {}, 'People'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Face'),
          h('th', { scope: 'col' }, 'Person'),
          h('th', { scope: 'col', title: 'Continuous runs of the face, linked into one person' }, 'Tracks'),
          h('th', { scope: 'col' }, 'Seen'),
          h('th', { scope: 'col', className: 'num' }, 'Frames'),
          h('th', { scope: 'col' }, 'Dominant'))),
        h('tbody', {}, people.map((p) => h('tr', { 'data-person': p.person },
          h('td', { className: 'thumb-cell' }, thumbnail ? thumbnail(p.person) : h('span', { className: 'thumb none', 'aria-hidden': 'true' })),
          h('th', { scope: 'row' }, p.person),
          h('td', {}, p.tracks.join(', ')),
          h('td', {}, timeRange(p)),
          h('td', { className: 'num' }, p.frames),
          h('td', {}, h('span', { className: `emotion ${p.dominant}` }, p.dominant)),
        ))),
      ),
  );
}
