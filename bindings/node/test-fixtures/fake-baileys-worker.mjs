// A worker on a fake Baileys socket, for the tests in ../test/. It is the
// example worker's shape (createWorker, attachBaileys) with the socket
// replaced by a script, so the tests exercise the real process: the events
// descriptor, signals and the exit.
//
// argv[2] is a JSON object:
//   updates:      connection.update payloads, emitted in order; an `error`
//                 written as {"boom": 440, "message": "..."} becomes a
//                 Boom-shaped error, {"plain": "..."} a plain Error;
//                 `afterMs` delays an update, as a server takes its time
//   heartbeatMs:  attachBaileys' heartbeatMs (default: the module's)
//   end:          what sock.end() does: "close" (emit the close update at
//                 once, as Baileys does), "never", or "throw"
//   saveCreds:    "ok" (default) or "hang" (a promise that never settles)
//   pairCode:     what requestPairingCode resolves to, or "reject"
//   keepAlive:    false to let the process end when nothing else is pending
//
// What the fake socket is asked to do is reported on stdout as JSON lines
// ({"spy": "end", ...}), apart from the events.
import { EventEmitter } from 'node:events';
import { createWorker } from '../index.js';

const config = JSON.parse(process.argv[2] ?? '{}');
const spy = (record) => process.stdout.write(JSON.stringify(record) + '\n');

function makeError(spec) {
  if (spec == null) return undefined;
  if (spec.plain !== undefined) return new Error(spec.plain);
  // The shape of @hapi/boom's errors, as Baileys builds them.
  const error = new Error(spec.message);
  error.isBoom = true;
  error.output = { statusCode: spec.boom, payload: { statusCode: spec.boom, message: spec.message }, headers: {} };
  return error;
}

const ev = new EventEmitter();
const sock = {
  ev,
  user: { id: '15551234567:7@s.whatsapp.net' },
  end(...args) {
    spy({ spy: 'end', n_args: args.length, first_is_undefined: args[0] === undefined });
    if (config.end === 'throw') throw new Error('end failed');
    if (config.end === 'never') return;
    ev.emit('connection.update', { connection: 'close', lastDisconnect: { error: args[0], date: new Date() } });
  },
  async requestPairingCode(phone) {
    spy({ spy: 'requestPairingCode', phone });
    if (config.pairCode === 'reject') throw new Error('not connected');
    return config.pairCode ?? 'ABCD2345';
  },
};

const saveCreds = () => {
  spy({ spy: 'saveCreds' });
  return config.saveCreds === 'hang' ? new Promise(() => {}) : Promise.resolve();
};

const worker = createWorker();
const options = { saveCreds };
if (config.heartbeatMs !== undefined) options.heartbeatMs = config.heartbeatMs;
worker.attachBaileys(sock, options);

// Baileys' open WebSocket keeps a real worker's event loop busy.
if (config.keepAlive !== false) setInterval(() => {}, 1 << 30);

for (const update of config.updates ?? []) {
  const { lastDisconnect, afterMs, ...rest } = update;
  await new Promise((resolve) => (afterMs ? setTimeout(resolve, afterMs) : setImmediate(resolve)));
  ev.emit('connection.update', lastDisconnect ? { ...rest, lastDisconnect: { error: makeError(lastDisconnect.error), date: new Date() } } : rest);
}
spy({ spy: 'updates_done' });
