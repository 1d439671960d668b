import { Api, ApiError } from './api';
import { detailView, type DetailView } from './detail';
import { formatDate, h } from './dom';
import { isActive, type ProcessingUpdate, type User, type Video } from './types';

const POLL_MS = 2000;

/** The signed-in page: upload form, the list of videos with live status, and the selected video. */
export class Library {
  readonly root: HTMLElement;
  private readonly list = h('ul', { className: 'videos', 'data-testid': 'video-list' });
  private readonly detailSlot = h('section', { className: 'detail-slot', 'data-testid': 'detail-slot' });
  private videos: Video[] = [];
  private selected: string | null = null;
  private detail: DetailView | null = null;
  /** One live-status watcher per unfinished video, so none is followed twice. */
  private readonly watchers = new Map<string, AbortController>();

  constructor(
    private readonly api: Api,
    user: User,
    onLogout: () => void,
  ) {
    this.root = h(
      'div',
      { className: 'library' },
      h('header', { className: 'topbar' },
        h('h1', {}, 'DeepEmotion'),
        h('span', { className: 'who', 'data-testid': 'current-user' }, user.username),
        h('button', { type: 'button', 'data-testid': 'logout', onclick: () => { this.close(); onLogout(); } }, 'Log out'),
      ),
      h('main', { className: 'columns' },
        h('aside', { className: 'sidebar' }, this.uploadForm(), h('h2', {}, 'Your videos'), this.list),
        this.detailSlot,
      ),
    );
    this.detailSlot.append(h('p', { className: 'empty' }, 'Upload a video or pick one from the list.'));
    this.refresh();
  }

  /** Stops every stream and poll, e.g. on log-out. */
  close(): void {
    for (const controller of this.watchers.values()) controller.abort();
    this.watchers.clear();
    this.detail?.destroy();
  }

  async refresh(): Promise<void> {
    try {
      this.videos = await this.api.videos();
    } catch (error) {
      this.list.replaceChildren(h('li', { className: 'message error' }, String((error as Error).message)));
      return;
    }
    this.renderList();
    for (const video of this.videos) if (isActive(video.status)) this.watch(video.id);
  }

  private uploadForm(): HTMLElement {
    const file = h('input', { type: 'file', accept: 'video/*', required: true, 'data-testid': 'upload-input' });
    const title = h('input', { name: 'title', placeholder: 'Title (optional)', maxLength: 200, 'data-testid': 'upload-title' });
    const bar = h('progress', { max: 100, value: 0, 'data-testid': 'upload-progress' });
    const status = h('span', { className: 'upload-status', 'data-testid': 'upload-status', role: 'status' });
    const button = h('button', { type: 'submit', className: 'primary', 'data-testid': 'upload-submit' }, 'Upload');
    const form: HTMLFormElement = h(
      'form',
      {
        className: 'upload card',
        'data-testid': 'upload-form',
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const chosen = file.files?.[0];
          if (!chosen) return;
          button.disabled = true;
          form.dataset.state = 'uploading';
          bar.value = 0;
          status.textContent = 'Uploading…';
          status.className = 'upload-status';
          try {
            const id = await this.api.upload(chosen, title.value.trim(), (fraction) => {
              bar.value = Math.round(fraction * 100);
              status.textContent = `Uploading… ${bar.value}%`;
            });
            form.dataset.state = 'done';
            status.textContent = 'Uploaded; analysing.';
            form.reset();
            await this.refresh();
            this.select(id);
          } catch (error) {
            form.dataset.state = 'failed';
            status.textContent = (error as Error).message;
            status.className = 'upload-status error';
          } finally {
            button.disabled = false;
          }
        },
      },
      h('h2', {}, 'Upload a video'),
      file,
      title,
      h('div', { className: 'upload-row' }, button, bar),
      status,
    );
    return form;
  }

  private renderList(): void {
    if (!this.videos.length) {
      this.list.replaceChildren(h('li', { className: 'empty', 'data-testid': 'no-videos' }, 'No videos yet.'));
      return;
    }
    this.list.replaceChildren(...this.videos.map((v) => this.listItem(v)));
  }

  private listItem(video: Video): HTMLElement {
    return h(
      'li',
      {
        className: `video-item${video.id === this.selected ? ' selected' : ''}`,
        'data-testid': 'video-item',
        'data-video-id': video.id,
        'data-status': video.status,
        'data-progress': video.progress,
      },
      h('button', { type: 'button', className: 'video-open', 'data-testid': 'video-open', onclick: () => this.select(video.id) },
        h('span', { className: 'video-title', 'data-testid': 'video-title' }, video.title),
        h('span', { className: 'video-meta' }, formatDate(video.uploaded_at)),
        h('span', { className: 'video-state' },
          h('span', { className: `badge ${video.status.toLowerCase()}`, 'data-testid': 'video-status' }, video.status),
          isActive(video.status) &&
            h('progress', { max: 100, value: video.progress, 'data-testid': 'video-progress', title: `${video.progress}%` }),
          isActive(video.status) && h('span', { className: 'percent' }, `${video.progress}%`),
          video.status === 'COMPLETED' && video.summary?.dominant &&
            h('span', { className: `emotion ${video.summary.dominant}` }, video.summary.dominant),
        ),
        video.error && h('span', { className: 'video-error' }, video.error),
      ),
    );
  }

  /** Replaces one video's entry in place, keeping the rest of the list (and focus) untouched. */
  private update(video: Video): void {
    const index = this.videos.findIndex((v) => v.id === video.id);
    if (index < 0) return;
    this.videos[index] = video;
    this.list.querySelector(`[data-video-id="${video.id}"]`)?.replaceWith(this.listItem(video));
    if (this.selected === video.id) this.detail?.status(video);
  }

  private applyUpdate(u: ProcessingUpdate): void {
    const video = this.videos.find((v) => v.id === u.video_id);
    if (video) this.update({ ...video, status: u.status, progress: u.progress, error: u.error ?? video.error });
  }

  /** Follows a video's analysis live until it finishes, then reloads it (and its details if open). */
  private async watch(id: string): Promise<void> {
    if (this.watchers.has(id)) return;
    const controller = new AbortController();
    this.watchers.set(id, controller);
    try {
      await this.follow(id, controller.signal);
      if (controller.signal.aborted) return;
      const video = await this.api.video(id);
      this.update(video);
      if (this.selected === id) this.select(id);
    } catch (error) {
      if (!controller.signal.aborted) console.warn('watching video', id, error);
    } finally {
      if (this.watchers.get(id) === controller) this.watchers.delete(id);
    }
  }

  /** Server-Sent Events when the server streams them, else polling; resolves once the video is done. */
  private async follow(id: string, signal: AbortSignal): Promise<void> {
    let streaming = true;
    while (!signal.aborted) {
      if (streaming) {
        let last: ProcessingUpdate | null = null;
        try {
          await this.api.events(id, (u) => {
            last = u;
            this.applyUpdate(u);
          }, signal);
        } catch (error) {
          if (signal.aborted) return;
          // no endpoint (or a proxy that cannot stream): poll from now on
          if (error instanceof ApiError && [404, 405, 501].includes(error.status)) streaming = false;
          else await sleep(POLL_MS, signal);
          continue;
        }
        if (last && !isActive((last as ProcessingUpdate).status)) return;
        await sleep(POLL_MS, signal); // the stream dropped before the end: reconnect
      } else {
        const video = await this.api.video(id);
        this.update(video);
        if (!isActive(video.status)) return;
        await sleep(POLL_MS, signal);
      }
    }
  }

  private async select(id: string): Promise<void> {
    this.selected = id;
    this.list.querySelectorAll('.video-item').forEach((el) =>
      el.classList.toggle('selected', (el as HTMLElement).dataset.videoId === id));
    this.detail?.destroy();
    this.detail = null;
    this.detailSlot.replaceChildren(h('p', { className: 'empty', 'data-testid': 'detail-loading' }, 'Loading…'));
    try {
      const video = await this.api.videoWithFrames(id);
      if (this.selected !== id) return; // another video was picked meanwhile
      this.update(video);
      if (isActive(video.status)) this.watch(id);
      this.detail = detailView(this.api, video, {
        renamed: (v) => this.update({ ...this.videos.find((x) => x.id === v.id)!, title: v.title }),
        deleted: (videoId) => this.removed(videoId),
      });
      this.detailSlot.replaceChildren(this.detail.root);
    } catch (error) {
      if (this.selected === id)
        this.detailSlot.replaceChildren(h('p', { className: 'message error' }, (error as Error).message));
    }
  }

  private removed(id: string): void {
    this.watchers.get(id)?.abort();
    this.watchers.delete(id);
    this.videos = this.videos.filter((v) => v.id !== id);
    this.renderList();
    if (this.selected === id) {
      this.selected = null;
      this.detail?.destroy();
      this.detail = null;
      this.detailSlot.replaceChildren(h('p', { className: 'empty' }, 'The video was deleted.'));
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}
