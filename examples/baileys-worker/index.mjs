// A Baileys connection worker for wa-ctl (see docs/worker-protocol.md).
//
// - Keeps the multi-file auth state in WA_CTL_SESSION_DIR.
// - Reports qr, connected and closed as JSON lines on WA_CTL_EVENTS_FD.
// - Never reconnects: on close it reports the code and exits, and wa-ctl's
//   policy decides (reconnect with backoff, restart, stop, or log out).
import fs from 'node:fs';
import baileys from '@whiskeysockets/baileys';

const makeWASocket = baileys.default ?? baileys.makeWASocket;
const { useMultiFileAuthState } = baileys;

const sessionDir = process.env.WA_CTL_SESSION_DIR;
const fd = Number(process.env.WA_CTL_EVENTS_FD); // never assume 3
if (!sessionDir || !Number.isInteger(fd)) {
  console.error('baileys-worker: WA_CTL_SESSION_DIR and WA_CTL_EVENTS_FD are not set: this worker is run by wa-ctl');
  process.exit(2);
}

// writeSync: the line is written before the next statement, even process.exit().
const emit = (event) => fs.writeSync(fd, JSON.stringify(event) + '\n');

const { state, saveCreds } = await useMultiFileAuthState(sessionDir);
const sock = makeWASocket({
  auth: state,
  // Quiet: the supervisor logs lifecycle lines, and QR payloads are secrets.
  logger: (await import('pino')).default({ level: 'silent' }),
});
let stopping = false;
const exit = (status) => saveCreds().catch(() => {}).finally(() => process.exit(status));

sock.ev.on('creds.update', saveCreds);
sock.ev.on('connection.update', ({ connection, qr, lastDisconnect }) => {
  if (qr) emit({ event: 'qr', code: qr });
  if (connection === 'open') emit({ event: 'connected', jid: sock.user?.id ?? null });
  if (connection === 'close' && !stopping) {
    // Baileys' close code; a connection that never opened (no network, DNS)
    // carries none, and is reported as 408, a lost connection.
    const code = lastDisconnect?.error?.output?.statusCode ?? 408;
    emit({ event: 'closed', code, reason: String(lastDisconnect?.error?.message ?? 'connection closed') });
    exit(0); // no reconnect: wa-ctl decides
  }
});

process.on('SIGTERM', () => {
  stopping = true;
  sock.end(undefined);
  exit(0);
});
