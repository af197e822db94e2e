/**
 * A Hugging Face Hub stand-in on 127.0.0.1 (node:http, port 0), implementing exactly what `@huggingface/hub` and
 * src/engine/hub hit:
 *   GET  /api/models/OWNER/NAME/revision/REV          modelInfo: {_id, id, sha, gated, private, lastModified}
 *   GET  /api/models/OWNER/NAME/tree/REV[/PATH]       listing: [{type, oid, size, path, lfs?: {oid, size, pointerSize}}]
 *   GET|HEAD /OWNER/NAME/resolve/REV/PATH              the file; LFS files answer 302 to /cdn/SHA256 like the Hub
 *   GET|HEAD /cdn/SHA256                               the LFS bytes
 * with the Hub's error shapes (`X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound | GatedRepo`), Range
 * requests (206 + Content-Range), and faults to inject: a connection dropped after N bytes, a stalled connection,
 * Range ignored (200), corrupted bytes, a hostile listing; a request never answered, or answered then stalled; an
 * answer held until the test lets it go; redirects anywhere (loops, file://); the connection closed without an
 * answer; a canned answer (a captive portal's HTML); a listing whose next page is itself. `new MockHub(repos,
 * { tls: true })` serves HTTPS with a self-signed certificate (which a client must refuse). Every request is recorded.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as net from 'node:net';
import * as path from 'node:path';

export interface MockRepo {
  files: Map<string, Uint8Array>;
  /** Which paths are stored in LFS (default: *.safetensors). */
  lfs?: (path: string) => boolean;
  /** Gated: files need `Authorization: Bearer <token>`. */
  gated?: { token: string };
  sha?: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  range?: string;
  authorization?: string;
  status: number;
  /** Body bytes sent. */
  sent: number;
}

export interface Faults {
  /** repo path → end the connection after this many body bytes (once each). */
  dropAfter: Map<string, number>;
  /** repo path → send this many bytes, then nothing (once each). */
  stallAfter: Map<string, number>;
  /** Answer Range requests with 200 and the whole file. */
  ignoreRange: boolean;
  /** repo paths served with one byte changed. */
  corrupt: Set<string>;
  /** Rewrites the listing (to inject hostile paths). */
  listing?: (entries: TreeEntry[]) => TreeEntry[];
  /**
   * Kind of request → never answered (-1: the connection stays open, no status line), or answered with this many body
   * bytes and then nothing (0: headers only). Every such request, not once.
   */
  hang: Map<RouteKind, number>;
  /** repo path → every transfer of it stops at this byte offset and holds (a resume from there gets nothing). */
  stallAt: Map<string, number>;
  /** Request path (as sent, without the query) → answered `302 Location: <value>` (any scheme, any loop). */
  redirects: Map<string, string>;
  /** Kinds of request whose connection is closed at once, without an answer. */
  close: Set<RouteKind>;
  /** Kinds of request answered only once the promise settles (to hold a download in flight). */
  hold: Map<RouteKind, Promise<unknown>>;
  /**
   * Kinds of request answered with this instead (a captive portal's HTML page, a 503); `thenHang`: the body is sent
   * but never ended.
   */
  answer: Map<RouteKind, { status: number; headers?: Record<string, string>; body: string; thenHang?: boolean }>;
  /** The listing's `Link` header names this page as the next one (a listing that never ends). */
  listingLinksToItself: boolean;
}

/** What a request asks for: model info, a listing, a file (resolve), LFS bytes (cdn), anything else. */
export type RouteKind = 'info' | 'tree' | 'resolve' | 'cdn' | 'other';

export interface TreeEntry {
  type: 'file' | 'directory';
  oid: string;
  size: number;
  path: string;
  lfs?: { oid: string; size: number; pointerSize: number };
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
export const gitBlobSha1 = (b: Uint8Array) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

/** Every file under `dir`, by `/`-separated relative path. */
export function readTree(dir: string, prefix = ''): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) for (const [k, v] of readTree(path.join(dir, e.name), rel)) out.set(k, v);
    else out.set(rel, new Uint8Array(fs.readFileSync(path.join(dir, e.name))));
  }
  return out;
}

export class MockHub {
  readonly requests: RecordedRequest[] = [];
  readonly faults: Faults = {
    dropAfter: new Map(),
    stallAfter: new Map(),
    ignoreRange: false,
    corrupt: new Set(),
    hang: new Map(),
    stallAt: new Map(),
    redirects: new Map(),
    close: new Set(),
    hold: new Map(),
    answer: new Map(),
    listingLinksToItself: false,
  };
  private server: http.Server;
  private stalled: http.ServerResponse[] = [];
  url = '';

  constructor(
    readonly repos: Map<string, MockRepo>,
    readonly opts: { tls?: boolean } = {},
  ) {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => void this.handle(req, res);
    this.server = opts.tls ? https.createServer({ key: MOCK_TLS_KEY, cert: MOCK_TLS_CERT }, handler) : http.createServer(handler);
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `${this.opts.tls ? 'https' : 'http'}://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** What a request path asks for. */
  static kind(pathname: string): RouteKind {
    const seg = pathname.split('/').slice(1);
    if (seg[0] === 'api' && seg[1] === 'models') return seg[4] === 'revision' ? 'info' : seg[4] === 'tree' ? 'tree' : 'other';
    if (seg[0] === 'cdn') return 'cdn';
    if (seg[2] === 'resolve') return 'resolve';
    return 'other';
  }

  async close(): Promise<void> {
    for (const r of this.stalled) r.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Requests for one repo file (resolve and the CDN it redirects to). */
  fileRequests(repoPath: string): RecordedRequest[] {
    return this.requests.filter((r) => r.path.endsWith(`/${repoPath}`) || r.path.includes(`file=${encodeURIComponent(repoPath)}`));
  }

  private sha(repo: string): string {
    const r = this.repos.get(repo)!;
    r.sha ??= createHash('sha1').update(repo).digest('hex');
    return r.sha;
  }

  private isLfs(r: MockRepo, p: string): boolean {
    return (r.lfs ?? ((x: string) => x.endsWith('.safetensors')))(p);
  }

  private tree(repo: string, sub: string): TreeEntry[] | undefined {
    const r = this.repos.get(repo)!;
    const entries: TreeEntry[] = [];
    const dirs = new Set<string>();
    for (const [p, b] of r.files) {
      if (sub && !p.startsWith(sub + '/')) continue;
      const parts = p.split('/');
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
      if (this.isLfs(r, p)) {
        const oid = sha256(b);
        const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize ${b.length}\n`;
        entries.push({ type: 'file', oid: gitBlobSha1(new TextEncoder().encode(pointer)), size: b.length, path: p, lfs: { oid, size: b.length, pointerSize: pointer.length } });
      } else {
        entries.push({ type: 'file', oid: gitBlobSha1(b), size: b.length, path: p });
      }
    }
    if (sub && entries.length === 0) return undefined;
    for (const d of dirs) if (!sub || d.startsWith(sub + '/')) entries.push({ type: 'directory', oid: '0'.repeat(40), size: 0, path: d });
    return this.faults.listing ? this.faults.listing(entries) : entries;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', this.url);
    const kind = MockHub.kind(u.pathname);
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: decodeURIComponent(u.pathname) + (u.searchParams.get('file') ? `?file=${encodeURIComponent(u.searchParams.get('file')!)}` : ''),
      range: req.headers.range,
      authorization: req.headers.authorization,
      status: 0,
      sent: 0,
    };
    this.requests.push(rec);
    const json = (status: number, body: unknown, code?: string, headers: Record<string, string> = {}) => {
      rec.status = status;
      const text = Buffer.from(JSON.stringify(body));
      res.writeHead(status, { 'Content-Type': 'application/json', ...(code ? { 'X-Error-Code': code } : {}), ...headers });
      const hang = this.faults.hang.get(kind);
      if (hang !== undefined && hang >= 0 && hang < text.length) {
        rec.sent = hang;
        res.write(text.subarray(0, hang));
        this.stalled.push(res);
        return;
      }
      res.end(text);
    };

    const to = this.faults.redirects.get(u.pathname);
    if (to !== undefined) {
      rec.status = 302;
      res.writeHead(302, { Location: to }).end();
      return;
    }
    if (this.faults.close.has(kind)) {
      req.socket.destroy();
      return;
    }
    if (this.faults.hang.get(kind) === -1) {
      this.stalled.push(res);
      return;
    }
    const held = this.faults.hold.get(kind);
    if (held) await held.catch(() => undefined);
    const canned = this.faults.answer.get(kind);
    if (canned) {
      rec.status = canned.status;
      res.writeHead(canned.status, canned.headers ?? {});
      if (canned.thenHang) {
        res.write(canned.body);
        this.stalled.push(res);
      } else {
        res.end(canned.body);
      }
      return;
    }
    const seg = u.pathname.split('/').slice(1).map(decodeURIComponent);

    if (seg[0] === 'api' && seg[1] === 'models') {
      const repo = `${seg[2]}/${seg[3]}`;
      if (!this.repos.has(repo)) return json(401, { error: 'Repository not found' }, 'RepoNotFound');
      const rev = seg[5];
      if (rev !== 'main' && rev !== this.sha(repo)) return json(404, { error: `Invalid rev id: ${rev}` }, 'RevisionNotFound');
      if (seg[4] === 'revision') {
        const r = this.repos.get(repo)!;
        return json(200, { _id: '0'.repeat(24), id: repo, sha: this.sha(repo), gated: r.gated ? 'manual' : false, private: false, lastModified: '2025-01-01T00:00:00.000Z' });
      }
      if (seg[4] === 'tree') {
        const list = this.tree(repo, seg.slice(6).join('/'));
        if (!list) return json(404, { error: 'Entry not found' }, 'EntryNotFound');
        return json(200, list, undefined, this.faults.listingLinksToItself ? { Link: `<${this.url}${req.url}>; rel="next"` } : {});
      }
      return json(404, { error: 'not found' });
    }

    if (seg[0] === 'cdn') {
      for (const r of this.repos.values()) {
        for (const [p, b] of r.files) if (this.isLfs(r, p) && sha256(b) === seg[1]) return this.serveBytes(req, res, rec, p, b);
      }
      rec.status = 404;
      res.writeHead(404).end();
      return;
    }

    if (seg[2] === 'resolve') {
      const repo = `${seg[0]}/${seg[1]}`;
      const r = this.repos.get(repo);
      if (!r) return json(401, { error: 'Repository not found' }, 'RepoNotFound');
      if (seg[3] !== 'main' && seg[3] !== this.sha(repo)) return json(404, { error: 'Invalid rev id' }, 'RevisionNotFound');
      if (r.gated) {
        const auth = req.headers.authorization;
        if (!auth) return json(401, { error: `Access to model ${repo} is restricted. You must have access to it and be authenticated to access it. Please log in.` }, 'GatedRepo');
        if (auth !== `Bearer ${r.gated.token}`) return json(403, { error: `Access to model ${repo} is restricted and you are not in the authorized list.` }, 'GatedRepo');
      }
      const p = seg.slice(4).join('/');
      const b = r.files.get(p);
      if (!b) return json(404, { error: 'Entry not found' }, 'EntryNotFound');
      if (this.isLfs(r, p)) {
        rec.status = 302;
        res.writeHead(302, { Location: `/cdn/${sha256(b)}?file=${encodeURIComponent(p)}`, 'X-Linked-Size': String(b.length), 'X-Linked-ETag': `"${sha256(b)}"` });
        res.end();
        return;
      }
      return this.serveBytes(req, res, rec, p, b);
    }
    json(404, { error: 'no such endpoint in the mock hub' });
  }

  private serveBytes(req: http.IncomingMessage, res: http.ServerResponse, rec: RecordedRequest, p: string, content: Uint8Array): void {
    let b = content;
    if (this.faults.corrupt.has(p)) {
      b = Uint8Array.from(content);
      b[b.length >> 1] ^= 0xff;
    }
    let start = 0;
    let status = 200;
    const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream', ETag: `"${sha256(content)}"`, 'Accept-Ranges': 'bytes' };
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m && !this.faults.ignoreRange) {
      start = Number(m[1]);
      const end = m[2] ? Math.min(Number(m[2]), b.length - 1) : b.length - 1;
      if (start >= b.length) {
        rec.status = 416;
        res.writeHead(416, { 'Content-Range': `bytes */${b.length}` }).end();
        return;
      }
      b = b.subarray(start, end + 1);
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${content.length}`;
    }
    headers['Content-Length'] = String(b.length);
    rec.status = status;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const drop = this.faults.dropAfter.get(p);
    let stall = this.faults.stallAfter.get(p);
    const stallAt = this.faults.stallAt.get(p);
    const hang = this.faults.hang.get(MockHub.kind(new URL(req.url ?? '/', this.url).pathname));
    if (stallAt !== undefined) stall = Math.max(0, stallAt - start);
    else if (hang !== undefined && hang >= 0) stall = hang;
    if (drop !== undefined && drop < b.length) {
      this.faults.dropAfter.delete(p);
      rec.sent = drop;
      // Flush the first bytes, then close the socket mid-body (the client sees fewer bytes than Content-Length).
      res.write(b.subarray(0, drop), () => res.socket?.end());
      return;
    }
    if (stall !== undefined && stall < b.length) {
      this.faults.stallAfter.delete(p);
      rec.sent = stall;
      if (stall > 0) res.write(b.subarray(0, stall));
      else res.flushHeaders();
      this.stalled.push(res);
      return;
    }
    rec.sent = b.length;
    res.end(b);
  }
}

/** A port nothing listens on (bound, then closed), for "offline". */
export async function closedPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/**
 * A server that accepts TCP connections and never says a word (no TLS handshake, no HTTP answer): what a black-holed
 * proxy looks like. Returns its port and a close function.
 */
export async function silentServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const s = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('error', () => undefined);
    sock.on('close', () => sockets.delete(sock));
  });
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return {
    port: (s.address() as AddressInfo).port,
    close: async () => {
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    },
  };
}

/** A self-signed certificate for 127.0.0.1 (test only; valid to 2126): a client that trusts the system CAs refuses it. */
export const MOCK_TLS_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgYK9c4dN7aerpetiC
pxDLUje3OODRjVggeWtwYCPjiMWhRANCAATYVSb7bqprJbJPJzQULqhF6M58eYRg
pUsHy7KOsc4czqJldvuIa4PppAF640sz7xLoC5Ylc1aKES9DtMZzPQjX
-----END PRIVATE KEY-----
`;
export const MOCK_TLS_CERT = `-----BEGIN CERTIFICATE-----
MIIBoDCCAUagAwIBAgIUYpzPwiegOHA+gd8VL9lcOayVsXswCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRcmVzaWR1YWwtbW9jay1odWIwIBcNMjYxMTMwMDQxOTM1WhgP
MjEyNjExMDYwNDE5MzVaMBwxGjAYBgNVBAMMEXJlc2lkdWFsLW1vY2staHViMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2FUm+26qayWyTyc0FC6oRejOfHmEYKVL
B8uyjrHOHM6iZXb7iGuD6aQBeuNLM+8S6AuWJXNWihEvQ7TGcz0I16NkMGIwHQYD
VR0OBBYEFL1P42YND/iBXKtTBXoS3nWuZfOCMB8GA1UdIwQYMBaAFL1P42YND/iB
XKtTBXoS3nWuZfOCMA8GA1UdEwEB/wQFMAMBAf8wDwYDVR0RBAgwBocEfwAAATAK
BggqhkjOPQQDAgNIADBFAiAaH9IEaEDMA4ZSTAfl7AOeMEBT2blF5907mRMJ5vW5
dAIhAL1Rlfca9lY+gzhVAZDxWewKIjPNRG8Dm9RAsXpcMitI
-----END CERTIFICATE-----
`;
