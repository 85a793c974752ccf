// SIGTERM, what `wa-ctl stop` sends: the worker ends its socket, saves its
// credentials, reports no close, and exits 0 within EXIT_TIMEOUT_MS, even
// when the socket or the credentials never finish.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EXIT_TIMEOUT_MS } from '../index.js';
import { LIMIT, startWorker } from '../test-fixtures/harness.mjs';

const isEvent = (name) => (line) => line.event === name;
const isSpy = (name) => (line) => line.spy === name;

// The promised bound, with room for the process to start its exit.
const EXIT_BOUND_MS = 2_000;
assert.ok(EXIT_TIMEOUT_MS < EXIT_BOUND_MS);

/** A connected worker, then SIGTERM; returns the exit, how long it took, and what was written. */
async function stopConnectedWorker(t, config) {
  const worker = startWorker(t, { heartbeatMs: false, ...config, updates: [{ connection: 'open' }] });
  // `connected` comes after attachBaileys installed the handler.
  await worker.events.waitFor(isEvent('connected'), { what: 'connected' });
  const signalledAt = performance.now();
  worker.child.kill('SIGTERM');
  const exit = await worker.exit();
  return { ...exit, elapsedMs: exit.at - signalledAt, events: await worker.events.done, spies: await worker.spies.done };
}

test('SIGTERM ends the socket with sock.end(undefined), saves the credentials and exits 0 without a closed event', LIMIT, async (t) => {
  const { code, signal, elapsedMs, events, spies } = await stopConnectedWorker(t, {});
  assert.deepEqual({ code, signal }, { code: 0, signal: null });
  // Baileys' end() emits a close without a code at once: that is no failure.
  assert.deepEqual(events, [{ event: 'connected', jid: '15551234567:7@s.whatsapp.net' }]);
  assert.deepEqual(spies.filter(isSpy('end')), [{ spy: 'end', n_args: 1, first_is_undefined: true }]);
  assert.ok(spies.some(isSpy('saveCreds')), JSON.stringify(spies));
  assert.ok(spies.findIndex(isSpy('end')) < spies.findIndex(isSpy('saveCreds')), 'end before saveCreds');
  // Nothing to wait for: well under the bound.
  assert.ok(elapsedMs < EXIT_TIMEOUT_MS, `exited ${elapsedMs.toFixed(0)} ms after SIGTERM`);
});

test('SIGTERM exits 0 within the bound when the socket never reports its close', LIMIT, async (t) => {
  const { code, elapsedMs, events, spies } = await stopConnectedWorker(t, { end: 'never' });
  assert.equal(code, 0);
  assert.ok(spies.some(isSpy('end')));
  assert.deepEqual(events.filter(isEvent('closed')), []);
  assert.ok(elapsedMs >= EXIT_TIMEOUT_MS * 0.9, `exited ${elapsedMs.toFixed(0)} ms after SIGTERM: it did not wait for the close`);
  assert.ok(elapsedMs < EXIT_BOUND_MS, `exited ${elapsedMs.toFixed(0)} ms after SIGTERM`);
});

test('SIGTERM exits 0 within the bound when saveCreds never settles', LIMIT, async (t) => {
  const { code, elapsedMs } = await stopConnectedWorker(t, { saveCreds: 'hang' });
  assert.equal(code, 0);
  assert.ok(elapsedMs < EXIT_BOUND_MS, `exited ${elapsedMs.toFixed(0)} ms after SIGTERM`);
});

test('SIGTERM exits 0 when sock.end() throws', LIMIT, async (t) => {
  const { code, elapsedMs, events } = await stopConnectedWorker(t, { end: 'throw' });
  assert.equal(code, 0);
  assert.deepEqual(events.filter(isEvent('closed')), []);
  assert.ok(elapsedMs < EXIT_BOUND_MS, `exited ${elapsedMs.toFixed(0)} ms after SIGTERM`);
});

test('SIGTERM stops the heartbeat', LIMIT, async (t) => {
  // saveCreds hangs, so the worker lives on for the exit bound after the
  // signal: time for many heartbeats, had they not stopped.
  const worker = startWorker(t, { heartbeatMs: 50, saveCreds: 'hang', updates: [{ connection: 'open' }] });
  await worker.events.waitFor(isEvent('alive'), { count: 2, what: 'two alive events' });
  const n_alive_at_signal = worker.events.values().filter(isEvent('alive')).length;
  worker.child.kill('SIGTERM');
  assert.equal((await worker.exit()).code, 0);
  const n_alive = (await worker.events.done).filter(isEvent('alive')).length;
  // One tick may be on its way when the signal lands; a running heartbeat
  // would have added about 30 in the exit bound.
  assert.ok(n_alive <= n_alive_at_signal + 2, `${n_alive - n_alive_at_signal} alive events after SIGTERM`);
});
