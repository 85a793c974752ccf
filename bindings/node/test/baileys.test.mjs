// attachBaileys in a real worker process: what a Baileys socket's
// connection.update becomes on the events pipe, and that the worker exits
// after a close instead of reconnecting.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LIMIT, boomClose, startWorker } from '../test-fixtures/harness.mjs';

const isEvent = (name) => (line) => line.event === name;
const isSpy = (name) => (line) => line.spy === name;
// The heartbeat has its own tests; here it would only interleave.
const noHeartbeat = { heartbeatMs: false };

test('qr, open and a Boom 440 close become qr, connected and closed 440, then exit 0 after saveCreds', LIMIT, async (t) => {
  const worker = startWorker(t, {
    ...noHeartbeat,
    updates: [
      { connection: 'connecting' },
      { qr: 'QR-ONE' },
      { qr: 'QR-TWO' },
      { connection: 'open' },
      boomClose(440, 'Stream Errored (conflict)'),
      // Anything after the close is not news, and the worker does not reconnect.
      { connection: 'open' },
    ],
  });
  const { code, signal } = await worker.exit();
  assert.deepEqual({ code, signal }, { code: 0, signal: null });
  assert.deepEqual(await worker.events.done, [
    { event: 'qr', code: 'QR-ONE' },
    { event: 'qr', code: 'QR-TWO' },
    { event: 'connected', jid: '15551234567:7@s.whatsapp.net' },
    { event: 'closed', code: 440, reason: 'Stream Errored (conflict)' },
  ]);
  const spies = await worker.spies.done;
  assert.ok(spies.some(isSpy('saveCreds')), `saveCreds before the exit: ${JSON.stringify(spies)}`);
  assert.ok(!spies.some(isSpy('end')), 'a close from the server needs no sock.end()');
});

test('a Boom 401 close (logged out) is closed 401', LIMIT, async (t) => {
  const worker = startWorker(t, { ...noHeartbeat, updates: [{ connection: 'open' }, boomClose(401, 'Intentional Logout')] });
  assert.equal((await worker.exit()).code, 0);
  assert.deepEqual((await worker.events.done).at(-1), { event: 'closed', code: 401, reason: 'Intentional Logout' });
});

test('a 515 after pairing is closed 515, and the credentials are saved before the exit', LIMIT, async (t) => {
  const worker = startWorker(t, { ...noHeartbeat, updates: [{ qr: 'QR' }, boomClose(515, 'Stream Errored (restart required)')] });
  assert.equal((await worker.exit()).code, 0);
  assert.deepEqual((await worker.events.done).at(-1), { event: 'closed', code: 515, reason: 'Stream Errored (restart required)' });
  assert.ok((await worker.spies.done).some(isSpy('saveCreds')));
});

test('a close without a status code is closed 428 with the error message', LIMIT, async (t) => {
  const worker = startWorker(t, {
    ...noHeartbeat,
    updates: [{ connection: 'open' }, { connection: 'close', lastDisconnect: { error: { plain: 'socket hang up' } } }],
  });
  assert.equal((await worker.exit()).code, 0);
  assert.deepEqual((await worker.events.done).at(-1), { event: 'closed', code: 428, reason: 'socket hang up' });
});

test('a close with no error at all is closed 428', LIMIT, async (t) => {
  const worker = startWorker(t, { ...noHeartbeat, updates: [{ connection: 'close', lastDisconnect: {} }] });
  assert.equal((await worker.exit()).code, 0);
  assert.deepEqual(await worker.events.done, [
    { event: 'closed', code: 428, reason: 'connection closed without a status code' },
  ]);
});

test("Baileys' 'QR refs attempts ended' is pairing_expired", LIMIT, async (t) => {
  const worker = startWorker(t, { ...noHeartbeat, updates: [{ qr: 'QR' }, boomClose(408, 'QR refs attempts ended')] });
  assert.equal((await worker.exit()).code, 0);
  assert.deepEqual(await worker.events.done, [{ event: 'qr', code: 'QR' }, { event: 'pairing_expired' }]);
});

test('another 408 is a lost connection, closed 408', LIMIT, async (t) => {
  const worker = startWorker(t, { ...noHeartbeat, updates: [{ qr: 'QR' }, boomClose(408, 'WebSocket Error (getaddrinfo ENOTFOUND web.whatsapp.com)')] });
  assert.equal((await worker.exit()).code, 0);
  assert.deepEqual((await worker.events.done).at(-1), { event: 'closed', code: 408, reason: 'WebSocket Error (getaddrinfo ENOTFOUND web.whatsapp.com)' });
});

test('with WA_CTL_PAIR_PHONE the first qr asks for a pair code, reported as ABCD-EFGH, and no qr is reported', LIMIT, async (t) => {
  const worker = startWorker(
    t,
    { ...noHeartbeat, pairCode: 'ABCD2345', updates: [{ qr: 'QR-ONE' }, { qr: 'QR-TWO' }] },
    { env: { WA_CTL_PAIR_PHONE: '15551234567' } },
  );
  await worker.events.waitFor(isEvent('pair_code'), { what: 'pair_code' });
  await worker.spies.waitFor(isSpy('updates_done'), { what: 'the end of the updates' });
  worker.child.kill('SIGTERM');
  assert.equal((await worker.exit()).code, 0);
  assert.deepEqual(await worker.events.done, [{ event: 'pair_code', code: 'ABCD-2345' }]);
  const requests = (await worker.spies.done).filter(isSpy('requestPairingCode'));
  assert.deepEqual(requests, [{ spy: 'requestPairingCode', phone: '15551234567' }]);
});

test('a failed pair-code request reports the QR code instead', LIMIT, async (t) => {
  const worker = startWorker(t, { ...noHeartbeat, pairCode: 'reject', updates: [{ qr: 'QR-ONE' }] }, { env: { WA_CTL_PAIR_PHONE: '15551234567' } });
  const [qr] = await worker.events.waitFor(isEvent('qr'), { what: 'qr' });
  assert.deepEqual(qr.value, { event: 'qr', code: 'QR-ONE' });
});

test('without WA_CTL_EVENTS_FD the events go to stdout', LIMIT, async (t) => {
  const worker = startWorker(t, { ...noHeartbeat, updates: [{ qr: 'QR' }, boomClose(440, 'conflict')] }, { eventsFd: false });
  assert.equal((await worker.exit()).code, 0);
  const events = (await worker.spies.done).filter((line) => line.event !== undefined);
  assert.deepEqual(events, [
    { event: 'qr', code: 'QR' },
    { event: 'closed', code: 440, reason: 'conflict' },
  ]);
});

test('alive is sent at once and then every interval', LIMIT, async (t) => {
  const intervalMs = 200;
  const started = performance.now();
  const worker = startWorker(t, { heartbeatMs: intervalMs, updates: [{ connection: 'open' }] });
  const alive = await worker.events.waitFor(isEvent('alive'), { count: 4, what: 'four alive events' });
  // The first comes with the start, before any connection news.
  assert.deepEqual(worker.events.values()[0], { event: 'alive' });
  const gaps = alive.slice(1).map((line, i) => line.at - alive[i].at);
  for (const gap of gaps) {
    // Never a flood; the upper bound only rules out a stopped timer, with
    // room for a loaded machine.
    assert.ok(gap >= intervalMs * 0.8, `alive ${gap.toFixed(0)} ms after the previous one, interval ${intervalMs} ms`);
    assert.ok(gap < intervalMs + 2_000, `alive ${gap.toFixed(0)} ms after the previous one, interval ${intervalMs} ms`);
  }
  assert.ok(alive[0].at - started < 5_000);
});

test('the heartbeat stops at the close: nothing follows closed', LIMIT, async (t) => {
  // saveCreds hangs, so the worker lives on for the whole exit bound after
  // the close: time for many heartbeats, had they not stopped.
  const worker = startWorker(t, {
    heartbeatMs: 50,
    saveCreds: 'hang',
    updates: [{ connection: 'open' }, { afterMs: 300, ...boomClose(440, 'conflict') }],
  });
  assert.equal((await worker.exit()).code, 0);
  const events = await worker.events.done;
  const closedAt = events.findIndex(isEvent('closed'));
  assert.ok(closedAt >= 0, JSON.stringify(events));
  assert.ok(events.slice(0, closedAt).filter(isEvent('alive')).length >= 2, `heartbeats before the close: ${JSON.stringify(events)}`);
  assert.deepEqual(events.slice(closedAt + 1), [], 'no event after closed');
});

test('the heartbeat timer does not keep the process alive', LIMIT, async (t) => {
  const worker = startWorker(t, { heartbeatMs: 60_000, keepAlive: false, updates: [] });
  const { code } = await worker.exit();
  assert.equal(code, 0);
  assert.deepEqual(await worker.events.done, [{ event: 'alive' }]);
});
