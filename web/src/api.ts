import type { Frame, LoginResponse, ProcessingUpdate, UploadTicket, User, Video, VideoDetail } from './types';

declare global {
  interface Window {
    DEEPEMOTION_API?: string;
  }
}

/** An error response of the API, `{"error": "...", "fields": {...}}`, with its status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly fields: Record<string, string[]> = {},
  ) {
    super(message);
  }
}

/** `window.DEEPEMOTION_API`, then `<meta name="deepemotion-api">`, then same-origin `/api/v2`. */
export function apiBase(): string {
  const meta = document.querySelector<HTMLMetaElement>('meta[name="deepemotion-api"]')?.content.trim();
  const base = window.DEEPEMOTION_API || meta || '/api/v2';
  return new URL(base.replace(/\/+$/, ''), location.href).href;
}

const TOKEN_KEY = 'deepemotion.token';

export class Api {
  readonly base = apiBase();
  /** Called when the server rejects the token, so the page can return to the login form. */
  onUnauthorized: () => void = () => {};

  get token(): string | null {
    return localStorage.getItem(TOKEN_KEY);
  }

  set token(value: string | null) {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  }

  /** Paths starting with `/api/...` (as in `frames_next` and `Link`) resolve against the API's origin. */
  url(path: string): string {
    if (/^https?:/.test(path)) return path;
    if (path.startsWith('/api/')) return new URL(path, this.base).href;
    return this.base + path;
  }

  async request(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.token) headers.set('Authorization', `Bearer ${this.token}`);
    if (typeof init.body === 'string') headers.set('Content-Type', 'application/json');
    const response = await fetch(this.url(path), { ...init, headers });
    if (response.ok) return response;
    const body = await response.json().catch(() => ({}));
    if (response.status === 401 && this.token) {
      this.token = null;
      this.onUnauthorized();
    }
    throw new ApiError(response.status, body.error || `${response.status} ${response.statusText}`, body.fields);
  }

  async json<T>(path: string, method = 'GET', body?: unknown): Promise<T> {
    const response = await this.request(path, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return response.json();
  }

  register(username: string, email: string, password: string): Promise<User> {
    return this.json('/auth/register', 'POST', { username, email, password });
  }

  async login(email: string, password: string): Promise<void> {
    const { access_token } = await this.json<LoginResponse>('/auth/login', 'POST', { email, password });
    this.token = access_token;
  }

  profile(): Promise<User> {
    return this.json('/auth/profile');
  }

  videos(): Promise<Video[]> {
    return this.json('/videos/');
  }

  video(id: string): Promise<Video> {
    return this.json(`/videos/${id}`);
  }

  /** The video with every frame: the first 1000 come embedded, the rest page by page. */
  async videoWithFrames(id: string): Promise<VideoDetail> {
    const detail = await this.json<VideoDetail>(`/videos/${id}`);
    let next = detail.frames_next;
    while (next) {
      const response = await this.request(next);
      detail.frames.push(...((await response.json()) as Frame[]));
      next = response.headers.get('Link')?.match(/<([^>]+)>;\s*rel="?next"?/)?.[1] ?? null;
    }
    return detail;
  }

  rename(id: string, title: string): Promise<Video> {
    return this.json(`/videos/${id}`, 'PATCH', { title });
  }

  async remove(id: string): Promise<void> {
    await this.request(`/videos/${id}`, { method: 'DELETE' });
  }

  async csv(id: string): Promise<Blob> {
    return (await this.request(`/videos/${id}/export.csv`)).blob();
  }

  /**
   * A small face crop of a person, or `null` when there is none (404). It needs the token, so it
   * comes as a blob (for `URL.createObjectURL`), not as a URL an `<img>` could load.
   */
  async personThumbnail(id: string, person: number, signal?: AbortSignal): Promise<Blob | null> {
    try {
      return await (await this.request(`/videos/${id}/people/${person}.jpg`, { signal })).blob();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return null;
      throw error;
    }
  }

  /** The player's source: a capability URL that needs no token, with Range support. */
  streamUrl(video: Video): string {
    return this.url(`/videos/stream/${video.s3_key.split('/').pop()}`);
  }

  /** Creates the video and PUTs the file to the presigned URL; the finished PUT starts the analysis. */
  async upload(file: File, title: string, onProgress: (fraction: number) => void): Promise<string> {
    const ticket = await this.json<UploadTicket>('/videos/upload/initialize', 'POST', {
      filename: file.name,
      title: title || undefined,
      content_type: file.type || undefined,
      size_bytes: file.size,
    });
    // XMLHttpRequest, not fetch: only it reports upload progress. No Authorization: the URL is signed.
    await new Promise<void>((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(ticket.method || 'PUT', new URL(ticket.upload_url, this.base).href);
      for (const [name, value] of Object.entries(ticket.headers ?? {})) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
      xhr.onload = () =>
        xhr.status < 300 ? resolve() : reject(new ApiError(xhr.status, `upload failed: ${xhr.status} ${xhr.responseText}`));
      xhr.onerror = () => reject(new ApiError(0, 'upload failed: network error'));
      xhr.send(file);
    });
    onProgress(1);
    return ticket.video_id;
  }

  /**
   * Streams `processing_update` events of a video with fetch (EventSource cannot send the token).
   * Resolves when the stream ends; rejects with status 404/405 when the server has no such endpoint.
   */
  async events(id: string, onUpdate: (u: ProcessingUpdate) => void, signal: AbortSignal): Promise<void> {
    const response = await this.request(`/videos/${id}/events`, {
      headers: { Accept: 'text/event-stream' },
      signal,
    });
    if (!response.body || !response.headers.get('Content-Type')?.includes('text/event-stream')) {
      throw new ApiError(404, 'no event stream');
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, '\n');
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = parseEvent(block);
        if (event?.type === 'processing_update') onUpdate(JSON.parse(event.data));
      }
    }
  }
}

function parseEvent(block: string): { type: string; data: string } | null {
  let type = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue; // comment / keep-alive
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
  }
  return data.length ? { type, data: data.join('\n') } : null;
}
