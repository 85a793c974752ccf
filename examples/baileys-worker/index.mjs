// A Baileys connection worker for wa-ctl (see docs/worker-protocol.md).
//
// bindings/node (the `wa-ctl-worker` package) speaks the protocol: it
// reports qr, pair_code, connected and closed (with Baileys' status code) on
// WA_CTL_EVENTS_FD, sends alive every 20 s, and exits after a close or on
// SIGTERM once the credentials are saved. This file only makes the socket.
// It never reconnects: wa-ctl's policy decides what follows a close.
import baileys from '@whiskeysockets/baileys';
import pino from 'pino';
import { createWorker } from 'wa-ctl-worker';

const makeWASocket = baileys.default ?? baileys.makeWASocket;

let worker;
try {
  worker = createWorker();
} catch (error) {
  console.error(`baileys-worker: ${error.message}`);
  process.exit(2);
}
if (!worker.sessionDir) {
  console.error('baileys-worker: WA_CTL_SESSION_DIR is not set: this worker is run by wa-ctl (by hand, set it to a directory of mode 0700)');
  process.exit(2);
}

const { state, saveCreds } = await baileys.useMultiFileAuthState(worker.sessionDir);
// Quiet: the supervisor logs lifecycle lines, and QR payloads are secrets.
const sock = makeWASocket({ auth: state, logger: pino({ level: 'silent' }) });
sock.ev.on('creds.update', saveCreds);
worker.attachBaileys(sock, { saveCreds });
