type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;
type Child = Node | string | number | null | undefined | false;

/** Creates an element: `on*` attributes become listeners, `null`/`false` attributes are left out. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name in el && typeof (el as any)[name] !== 'function' && !name.includes('-')) (el as any)[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat())
    if (child != null && child !== false) el.append(typeof child === 'number' ? String(child) : child);
  return el;
}

export const $ = <T extends Element = HTMLElement>(selector: string, root: ParentNode = document): T =>
  root.querySelector<T>(selector)!;

/** Saves a blob as a file through a temporary link. */
export function download(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function formatDate(iso: string | null): string {
  return iso ? new Date(iso).toLocaleString() : '';
}

export function formatSeconds(s: number | null): string {
  if (s == null) return '';
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

/** Stable colours per emotion, shared by the chart, the bars, the strip and the boxes. */
export const EMOTION_COLORS: Record<string, string> = {
  angry: '#d62728',
  disgust: '#8c564b',
  fear: '#9467bd',
  happy: '#e6a700',
  neutral: '#7f7f7f',
  sad: '#1f77b4',
  surprised: '#17becf',
  contempt: '#bcbd22',
};

export const emotionColor = (label: string): string => EMOTION_COLORS[label] ?? '#444';

export function argmax(scores: Record<string, number>): string | null {
  let best: string | null = null;
  for (const [label, p] of Object.entries(scores)) if (best === null || p > scores[best]) best = label;
  return best;
}
