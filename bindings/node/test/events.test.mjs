// The event writer on its own, in this process: the exact lines, what the
// protocol refuses, the descriptor from the environment, and exit().
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { CODE_WITHOUT_STATUS, closeFromBaileys, createWorker } from '../index.js';
import { LIMIT } from '../test-fixtures/harness.mjs';

/** A worker writing to a fresh file, and a way to read what it wrote. */
function workerOnFile(t, options = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-ctl-worker-test-'));
  const file = path.join(dir, 'events');
  const fd = fs.openSync(file, 'w');
  t.after(() => {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const worker = createWorker({ env: { WA_CTL_EVENTS_FD: String(fd) }, ...options });
  return { worker, fd, written: () => fs.readFileSync(file, 'utf8') };
}

test('each event is one JSON line with the protocol’s field names', LIMIT, (t) => {
  const { worker, written } = workerOnFile(t);
  worker.qr('2@abc,def');
  worker.pairCode('ABCD-EFGH');
  worker.connected('15551234567@s.whatsapp.net');
  worker.connected();
  worker.closed(440, 'conflict');
  worker.closed(408);
  worker.closed(402, 'banned', { retryAfterS: 120 });
  worker.pairingExpired();
  worker.alive();
  assert.equal(
    written(),
    [
      '{"event":"qr","code":"2@abc,def"}',
      '{"event":"pair_code","code":"ABCD-EFGH"}',
      '{"event":"connected","jid":"15551234567@s.whatsapp.net"}',
      '{"event":"connected","jid":null}',
      '{"event":"closed","code":440,"reason":"conflict"}',
      '{"event":"closed","code":408,"reason":null}',
      '{"event":"closed","code":402,"reason":"banned","retry_after_s":120}',
      '{"event":"pairing_expired"}',
      '{"event":"alive"}',
      '',
    ].join('\n'),
  );
});

test('text with newlines and control characters stays on one line of valid JSON, unchanged', LIMIT, (t) => {
  const { worker, written } = workerOnFile(t);
  const reason = 'line one\nline two\r\u001b[31mred\u0007 \u2028 ☎ "quoted" \\';
  worker.closed(500, reason);
  const lines = written().split('\n');
  assert.equal(lines.length, 2);
  assert.equal(lines[1], '');
  assert.deepEqual(JSON.parse(lines[0]), { event: 'closed', code: 500, reason });
});

test('closed accepts only integer codes from 0 to 65535', LIMIT, (t) => {
  const { worker, written } = workerOnFile(t);
  for (const code of [-1, 65536, 440.5, '440', NaN, null, undefined]) {
    assert.throws(() => worker.closed(code, 'x'), RangeError, `code ${String(code)}`);
  }
  worker.closed(0);
  worker.closed(65535);
  assert.equal(written(), '{"event":"closed","code":0,"reason":null}\n{"event":"closed","code":65535,"reason":null}\n');
});

test('retryAfterS is whole seconds, rounded up, and never negative', LIMIT, (t) => {
  const { worker, written } = workerOnFile(t);
  worker.closed(503, 'rate limited', { retryAfterS: 0.2 });
  worker.closed(503, 'rate limited', { retryAfterS: 0 });
  for (const retryAfterS of [-1, NaN, Infinity, '120']) {
    assert.throws(() => worker.closed(503, 'x', { retryAfterS }), RangeError, `retryAfterS ${String(retryAfterS)}`);
  }
  assert.deepEqual(
    written().trim().split('\n').map((line) => JSON.parse(line).retry_after_s),
    [1, 0],
  );
});

test('qr and pair codes must be non-empty strings', LIMIT, (t) => {
  const { worker, written } = workerOnFile(t);
  for (const code of ['', undefined, 42]) {
    assert.throws(() => worker.qr(code), TypeError);
    assert.throws(() => worker.pairCode(code), TypeError);
  }
  assert.equal(written(), '');
});

test('the descriptor comes from WA_CTL_EVENTS_FD, and stdout without it', LIMIT, (t) => {
  const { worker, fd } = workerOnFile(t);
  assert.equal(worker.eventsFd, fd);
  assert.equal(worker.supervised, true);
  const byHand = createWorker({ env: {} });
  assert.equal(byHand.eventsFd, 1);
  assert.equal(byHand.supervised, false);
  assert.equal(byHand.sessionDir, undefined);
  const env = { WA_CTL_SESSION_ID: 'sales', WA_CTL_SESSION_DIR: '/state/sessions/sales', WA_CTL_PAIR_PHONE: '15551234567' };
  const full = createWorker({ env });
  assert.deepEqual([full.sessionId, full.sessionDir, full.pairPhone], ['sales', '/state/sessions/sales', '15551234567']);
});

test('a WA_CTL_EVENTS_FD that is not an open descriptor is an error, not a silent stdout', LIMIT, () => {
  assert.throws(() => createWorker({ env: { WA_CTL_EVENTS_FD: 'three' } }), /not a descriptor number/);
  assert.throws(() => createWorker({ env: { WA_CTL_EVENTS_FD: '-3' } }), /not a descriptor number/);
  assert.throws(() => createWorker({ env: { WA_CTL_EVENTS_FD: '987654' } }), /not an open descriptor/);
});

test('startHeartbeat refuses an interval that is not a positive whole number of ms', LIMIT, (t) => {
  const { worker, written } = workerOnFile(t);
  for (const interval of [0, -5, 1.5, NaN, '20000']) {
    assert.throws(() => worker.startHeartbeat(interval), RangeError);
  }
  assert.equal(written(), '');
});

test('exit waits for the beforeExit work, then exits once with the first status', LIMIT, async (t) => {
  const statuses = [];
  const order = [];
  const { worker } = workerOnFile(t, { exit: (status) => statuses.push(status) });
  worker.beforeExit(async () => {
    await new Promise((resolve) => setImmediate(resolve));
    order.push('saved');
  });
  const first = worker.exit(0);
  const second = worker.exit(1);
  assert.equal(first, second);
  assert.equal(worker.exiting, true);
  await first;
  order.push('exited');
  assert.deepEqual(statuses, [0]);
  assert.deepEqual(order, ['saved', 'exited']);
});

// That exit() does not wait past its bound for work that never ends is
// tested in real processes (sigterm.test.mjs: saveCreds never settles): here
// the bound's timer would keep this test process alive if it broke.
test('exit goes on when the beforeExit work fails', LIMIT, async (t) => {
  const statuses = [];
  const { worker } = workerOnFile(t, { exit: (status) => statuses.push(status), exitTimeoutMs: 60_000 });
  worker.beforeExit(() => Promise.reject(new Error('disk full')));
  await worker.exit(3);
  assert.deepEqual(statuses, [3]);
});

test('closeFromBaileys maps lastDisconnect to the event to report', LIMIT, () => {
  const boom = (statusCode, message) => Object.assign(new Error(message), { isBoom: true, output: { statusCode } });
  const cases = [
    [{ error: boom(440, 'Stream Errored (conflict)') }, { event: 'closed', code: 440, reason: 'Stream Errored (conflict)' }],
    [{ error: boom(401, 'Intentional Logout') }, { event: 'closed', code: 401, reason: 'Intentional Logout' }],
    [{ error: boom(515, 'Stream Errored (restart required)') }, { event: 'closed', code: 515, reason: 'Stream Errored (restart required)' }],
    [{ error: boom(408, 'QR refs attempts ended') }, { event: 'pairing_expired' }],
    [{ error: boom(408, 'Connection was lost') }, { event: 'closed', code: 408, reason: 'Connection was lost' }],
    [{ error: new Error('socket hang up') }, { event: 'closed', code: CODE_WITHOUT_STATUS, reason: 'socket hang up' }],
    [{ error: boom(70000, 'out of range') }, { event: 'closed', code: CODE_WITHOUT_STATUS, reason: 'out of range' }],
    [{ error: undefined }, { event: 'closed', code: CODE_WITHOUT_STATUS, reason: 'connection closed without a status code' }],
    [undefined, { event: 'closed', code: CODE_WITHOUT_STATUS, reason: 'connection closed without a status code' }],
  ];
  for (const [lastDisconnect, expected] of cases) {
    assert.deepEqual(closeFromBaileys(lastDisconnect), expected, JSON.stringify(lastDisconnect));
  }
  assert.equal(CODE_WITHOUT_STATUS, 428);
});
