/**
 * The request contract every panel uses (src/host/requests.ts against src/protocol/requests.ts): one reply per
 * request, errors as messages, cancel by id, one cancellation scope per kind of job, host jobs in the same scopes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ResidualError, throwIfCancelled } from '../../src/engine/errors';
import { RequestRouter, type Job } from '../../src/host/requests';
import type { ProgressMessage, ReplyMessage } from '../../src/protocol';

type Requests = {
  echo: { params: { x: number }; result: number };
  slow: { params: { tag: string }; result: string };
  other: { params: { tag: string }; result: string };
  free: { params: { tag: string }; result: string };
  fail: { params: { internal: boolean }; result: void };
};

/** A gate a test opens to let a handler finish. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { open, opened };
}

function setup() {
  const sent: (ReplyMessage | ProgressMessage)[] = [];
  const lines: string[] = [];
  const gates = new Map<string, ReturnType<typeof gate>>();
  const seen = new Map<string, Job>();
  const waitFor = (tag: string) => {
    if (!gates.has(tag)) gates.set(tag, gate());
    return gates.get(tag)!;
  };
  const slowRun = async (p: { tag: string }, job: Job) => {
    seen.set(p.tag, job);
    job.progress(1, 2, p.tag);
    await waitFor(p.tag).opened;
    throwIfCancelled(job.token);
    return `done ${p.tag}`;
  };
  const router = new RequestRouter<Requests>(
    'Test',
    {
      echo: { run: async (p) => p.x * 2 },
      slow: { scope: 'run', run: slowRun },
      other: { scope: 'vector', run: slowRun },
      free: { run: slowRun },
      fail: {
        run: async (p) => {
          if (p.internal) throw new TypeError("Cannot read properties of undefined (reading 'dtype')");
          throw new ResidualError('no vector yet', 'steering');
        },
      },
    },
    (m) => sent.push(m),
    { appendLine: (l) => lines.push(l) },
  );
  const replies = () => sent.filter((m): m is ReplyMessage => m.type === 'reply');
  const settled = async (n: number) => {
    for (let i = 0; i < 100 && replies().length < n; i++) await new Promise((r) => setImmediate(r));
    assert.equal(replies().length, n, `expected ${n} replies, got ${JSON.stringify(replies())}`);
  };
  return { router, sent, lines, replies, settled, waitFor, seen };
}

test('a request gets exactly one reply carrying its result; other messages are not requests', async () => {
  const t = setup();
  assert.equal(t.router.handle({ type: 'request', id: 7, method: 'echo', params: { x: 21 } }), true);
  await t.settled(1);
  assert.deepEqual(t.replies(), [{ type: 'reply', id: 7, ok: true, result: 42 }]);
  assert.equal(t.router.handle({ type: 'ready' } as never), false);
  await new Promise((r) => setImmediate(r));
  assert.equal(t.replies().length, 1);
});

test('errors come back as the message to show: a ResidualError as it is, anything else as an internal error with its stack logged', async () => {
  const t = setup();
  t.router.handle({ type: 'request', id: 1, method: 'fail', params: { internal: false } });
  t.router.handle({ type: 'request', id: 2, method: 'fail', params: { internal: true } });
  t.router.handle({ type: 'request', id: 3, method: 'nope', params: {} } as never);
  await t.settled(3);
  const byId = new Map(t.replies().map((r) => [r.id, r]));
  assert.deepEqual(byId.get(1), { type: 'reply', id: 1, ok: false, message: 'steering: no vector yet', cancelled: false });
  assert.deepEqual(byId.get(2), { type: 'reply', id: 2, ok: false, message: "internal error: Cannot read properties of undefined (reading 'dtype')", cancelled: false });
  assert.deepEqual(byId.get(3), { type: 'reply', id: 3, ok: false, message: 'internal error: unknown request nope', cancelled: false });
  assert.ok(t.lines.some((l) => l.includes('TypeError')), 'the internal error is logged with its stack');
});

test('cancel by id: the handler sees its token cancelled and the reply says cancelled; others run on', async () => {
  const t = setup();
  t.router.handle({ type: 'request', id: 1, method: 'free', params: { tag: 'a' } });
  t.router.handle({ type: 'request', id: 2, method: 'free', params: { tag: 'b' } });
  await new Promise((r) => setImmediate(r));
  t.router.handle({ type: 'cancel', id: 1 });
  assert.equal(t.seen.get('a')!.token.isCancellationRequested, true);
  assert.equal(t.seen.get('b')!.token.isCancellationRequested, false);
  t.waitFor('a').open();
  t.waitFor('b').open();
  await t.settled(2);
  const byId = new Map(t.replies().map((r) => [r.id, r]));
  assert.deepEqual(byId.get(1), { type: 'reply', id: 1, ok: false, message: 'Cancelled.', cancelled: true });
  assert.deepEqual(byId.get(2), { type: 'reply', id: 2, ok: true, result: 'done b' });
  // Unknown and finished ids are ignored.
  t.router.handle({ type: 'cancel', id: 99 });
  t.router.handle({ type: 'cancel', id: 2 });
});

test('one cancellation scope per kind of job: a new run cancels the previous run only, not a vector build or a free request', async () => {
  const t = setup();
  t.router.handle({ type: 'request', id: 1, method: 'slow', params: { tag: 'run1' } });
  t.router.handle({ type: 'request', id: 2, method: 'other', params: { tag: 'vec' } });
  t.router.handle({ type: 'request', id: 3, method: 'free', params: { tag: 'sel' } });
  await new Promise((r) => setImmediate(r));
  assert.equal(t.router.busy('run'), true);
  t.router.handle({ type: 'request', id: 4, method: 'slow', params: { tag: 'run2' } });
  await new Promise((r) => setImmediate(r));
  assert.equal(t.seen.get('run1')!.token.isCancellationRequested, true);
  assert.equal(t.seen.get('run1')!.current, false);
  for (const tag of ['vec', 'sel', 'run2']) assert.equal(t.seen.get(tag)!.token.isCancellationRequested, false, tag);
  for (const tag of ['run1', 'vec', 'sel', 'run2']) t.waitFor(tag).open();
  await t.settled(4);
  const byId = new Map(t.replies().map((r) => [r.id, r]));
  assert.equal(byId.get(1)!.ok, false);
  assert.equal((byId.get(1) as { cancelled: boolean }).cancelled, true);
  for (const id of [2, 3, 4]) assert.equal(byId.get(id)!.ok, true, `request ${id}`);
  assert.equal(t.router.busy('run'), false);
});

test('a request that finishes after being cancelled still replies cancelled (its caller has moved on)', async () => {
  const sent: ReplyMessage[] = [];
  let release!: () => void;
  const router = new RequestRouter<{ work: { params: Record<string, never>; result: number } }>(
    'Test',
    { work: { run: () => new Promise<number>((r) => (release = () => r(5))) } },
    (m) => m.type === 'reply' && sent.push(m),
    { appendLine: () => undefined },
  );
  router.handle({ type: 'request', id: 1, method: 'work', params: {} });
  router.handle({ type: 'cancel', id: 1 });
  release();
  for (let i = 0; i < 20 && !sent.length; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(sent, [{ type: 'reply', id: 1, ok: false, message: 'Cancelled.', cancelled: true }]);
});

test('progress goes out for the current request only', async () => {
  const t = setup();
  t.router.handle({ type: 'request', id: 1, method: 'slow', params: { tag: 'p1' } });
  await new Promise((r) => setImmediate(r));
  t.router.handle({ type: 'cancel', id: 1 });
  t.seen.get('p1')!.progress(2, 2, 'late');
  const progress = t.sent.filter((m) => m.type === 'progress');
  assert.deepEqual(progress, [{ type: 'progress', id: 1, done: 1, total: 2, message: 'p1' }]);
  t.waitFor('p1').open();
  await t.settled(1);
});

test('host jobs share the scopes: a job cancels the scope’s request, a newer job cancels the job, the webview cancels a job by id', async () => {
  const t = setup();
  t.router.handle({ type: 'request', id: 1, method: 'slow', params: { tag: 'r' } });
  await new Promise((r) => setImmediate(r));
  const job1 = t.router.begin('run');
  assert.equal(t.seen.get('r')!.token.isCancellationRequested, true, 'the request of the scope is cancelled');
  let heard = 0;
  job1.token.onCancellationRequested(() => heard++);
  const job2 = t.router.begin('run');
  assert.notEqual(job1.id, job2.id);
  assert.equal(job1.current, false);
  assert.equal(heard, 1, 'the listener hears the cancellation once');
  assert.equal(job2.current, true);
  t.router.handle({ type: 'cancel', id: job2.id, job: true });
  assert.equal(job2.current, false);
  job1.finish();
  job2.finish();
  assert.equal(t.router.busy('run'), false);
  const job3 = t.router.begin('run');
  t.router.cancelAll();
  assert.equal(job3.token.isCancellationRequested, true);
  t.waitFor('r').open();
  await t.settled(1);
});

test('reset (the webview reloaded or closed): its requests are cancelled and their replies dropped; host jobs run on', async () => {
  const t = setup();
  t.router.handle({ type: 'request', id: 1, method: 'slow', params: { tag: 'old' } });
  await new Promise((r) => setImmediate(r));
  const job = t.router.begin('other-scope');
  t.router.reset();
  assert.equal(t.seen.get('old')!.token.isCancellationRequested, true);
  assert.equal(job.current, true, 'a host job is not the webview’s request');
  // The new webview numbers its requests from 1 again: only its own reply may arrive for id 1.
  t.router.handle({ type: 'request', id: 1, method: 'echo', params: { x: 4 } });
  t.waitFor('old').open();
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(t.replies(), [{ type: 'reply', id: 1, ok: true, result: 8 }]);
  t.seen.get('old')!.progress(2, 2);
  assert.equal(t.sent.filter((m) => m.type === 'progress' && m.done === 2).length, 0, 'no progress from an orphaned request');
  job.finish();
});
