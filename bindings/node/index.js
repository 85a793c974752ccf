// wa-ctl-worker: the wa-ctl worker protocol for Node.js services.
//
// A worker holds one WhatsApp Web connection and reports what happens to it
// as JSON lines on the descriptor named by WA_CTL_EVENTS_FD. It never
// reconnects: when the connection closes it reports the close code and
// exits, and the supervisor decides what happens next. The contract is
// docs/worker-protocol.md in the wa-ctl repository; this module is one
// implementation of it, with no dependencies, so that an existing Baileys
// service needs a few lines to become a worker.

import fs from 'node:fs';

/** How often `startHeartbeat` sends `alive` by default: a third of the
 * supervisor's default `heartbeat_timeout` (60 s), so that two lost ticks
 * (a long garbage collection, a busy event loop) are not yet a hang. */
export const HEARTBEAT_INTERVAL_MS = 20_000;

/** The longest a worker takes to exit once it has decided to, whatever its
 * `saveCreds` or the socket does. It stays under 2 s, well inside the
 * supervisor's `stop_timeout` (10 s by default), so that a stop never ends
 * in SIGKILL while credentials are being written. */
export const EXIT_TIMEOUT_MS = 1_500;

/** The close code reported for a Baileys close that carries no status code
 * (an error that is not a Boom error). It is Baileys' own `connectionClosed`,
 * whose default action in wa-ctl is `reconnect`, with the error's message as
 * the reason. Exiting without `closed` would count as `crash`, which the
 * policy treats the same way, but tells the operator less. */
export const CODE_WITHOUT_STATUS = 428;

/** Baileys reports that every QR code expired unused as a 408 with this
 * message and nothing else to tell it from a lost connection. It is the
 * one place where this module looks at an error's text: if a Baileys
 * version words it differently, the close is reported as a plain 408, and
 * the supervisor reconnects instead of stopping, which is harmless. */
const BAILEYS_QR_EXHAUSTED = 'QR refs attempts ended';

/**
 * Creates the worker's side of the protocol from the environment wa-ctl
 * sets: WA_CTL_EVENTS_FD, WA_CTL_SESSION_ID, WA_CTL_SESSION_DIR and, for
 * the pair-code flow, WA_CTL_PAIR_PHONE.
 *
 * Without WA_CTL_EVENTS_FD the events go to stdout, so that a worker can be
 * run by hand. A WA_CTL_EVENTS_FD that is not an open descriptor throws.
 *
 * @param {object} [options]
 * @param {NodeJS.ProcessEnv} [options.env] where to read the variables (default `process.env`)
 * @param {(status: number) => void} [options.exit] how to end the process (default `process.exit`)
 * @param {number} [options.exitTimeoutMs] the bound on `exit()` (default {@link EXIT_TIMEOUT_MS})
 * @returns {Worker}
 */
export function createWorker({ env = process.env, exit = (status) => process.exit(status), exitTimeoutMs = EXIT_TIMEOUT_MS } = {}) {
  return new Worker({ env, exit, exitTimeoutMs });
}

export class Worker {
  #fd;
  #exit;
  #exitTimeoutMs;
  #heartbeat = null;
  #exiting = null;
  #stopping = false;
  #beforeExit = [];

  /** @internal use {@link createWorker} */
  constructor({ env, exit, exitTimeoutMs }) {
    const raw = env.WA_CTL_EVENTS_FD;
    if (raw === undefined || raw === '') {
      this.#fd = 1;
      /** Whether a supervisor gave this process its events descriptor. */
      this.supervised = false;
    } else {
      this.#fd = parseDescriptor(raw);
      this.supervised = true;
    }
    /** WA_CTL_SESSION_ID, or undefined when run by hand. */
    this.sessionId = env.WA_CTL_SESSION_ID || undefined;
    /** WA_CTL_SESSION_DIR: where the credentials live (mode 0700). */
    this.sessionDir = env.WA_CTL_SESSION_DIR || undefined;
    /** WA_CTL_PAIR_PHONE: digits only, set when `wa-ctl login --phone` asked for a pair code. */
    this.pairPhone = env.WA_CTL_PAIR_PHONE || undefined;
    this.#exit = exit;
    this.#exitTimeoutMs = checkPositiveInteger(exitTimeoutMs, 'exitTimeoutMs');
  }

  /** The descriptor events are written to: WA_CTL_EVENTS_FD, or 1 (stdout). */
  get eventsFd() {
    return this.#fd;
  }

  /**
   * Writes one event as one JSON line. The write is synchronous, so the line
   * is in the pipe before the next statement runs, `process.exit()` included:
   * a `closed` written just before an exit is never lost.
   *
   * @param {{event: string}} event
   */
  send(event) {
    writeFully(this.#fd, Buffer.from(JSON.stringify(event) + '\n'));
  }

  /** A QR code waits to be scanned. `code` is a secret: never log it. */
  qr(code) {
    this.send({ event: 'qr', code: checkString(code, 'qr code') });
  }

  /** A pair code waits to be typed on the phone. A secret too. */
  pairCode(code) {
    this.send({ event: 'pair_code', code: checkString(code, 'pair code') });
  }

  /** The connection is up. `jid` names the account; it may be left out. */
  connected(jid) {
    this.send({ event: 'connected', jid: jid == null ? null : String(jid) });
  }

  /**
   * The connection ended with this close code. Call `exit()` next: the
   * supervisor acts on the exit, and the worker must not reconnect.
   *
   * @param {number} code an integer from 0 to 65535
   * @param {string} [reason] free text
   * @param {{retryAfterS?: number}} [options] the supervisor does not retry
   *   before this many seconds (a ban's or a rate limit's expiry); a
   *   fraction is rounded up, so the wait is never shorter than asked
   */
  closed(code, reason, { retryAfterS } = {}) {
    if (!isCloseCode(code)) {
      throw new RangeError(`close code must be an integer from 0 to 65535, got ${String(code)}`);
    }
    const event = { event: 'closed', code, reason: reason == null ? null : String(reason) };
    if (retryAfterS != null) {
      if (typeof retryAfterS !== 'number' || !Number.isFinite(retryAfterS) || retryAfterS < 0) {
        throw new RangeError(`retryAfterS must be a non-negative number of seconds, got ${String(retryAfterS)}`);
      }
      event.retry_after_s = Math.ceil(retryAfterS);
    }
    this.send(event);
  }

  /** Every QR code expired unused. Exit next; the session then waits for `wa-ctl login`. */
  pairingExpired() {
    this.send({ event: 'pairing_expired' });
  }

  /**
   * The heartbeat. Once a worker has sent `alive`, the supervisor expects
   * one at least every `heartbeat_timeout` (60 s by default) and ends a
   * silent worker as `hang`. Prefer `startHeartbeat()`.
   */
  alive() {
    this.send({ event: 'alive' });
  }

  /**
   * Sends `alive` now and then every `intervalMs`, from a timer that does
   * not keep the process alive. A blocked event loop sends nothing, which is
   * what lets the supervisor see a frozen worker. Calling it again restarts
   * the timer with the new interval.
   *
   * @param {number} [intervalMs] default {@link HEARTBEAT_INTERVAL_MS}
   * @returns {() => void} stops the heartbeat
   */
  startHeartbeat(intervalMs = HEARTBEAT_INTERVAL_MS) {
    checkPositiveInteger(intervalMs, 'heartbeat interval');
    this.stopHeartbeat();
    this.alive();
    this.#heartbeat = setInterval(() => this.alive(), intervalMs);
    this.#heartbeat.unref();
    return () => this.stopHeartbeat();
  }

  /** Stops the heartbeat, if it runs. */
  stopHeartbeat() {
    if (this.#heartbeat !== null) {
      clearInterval(this.#heartbeat);
      this.#heartbeat = null;
    }
  }

  /**
   * Registers work to finish before `exit()` ends the process, such as
   * Baileys' `saveCreds`. The work shares the exit's time bound.
   *
   * @param {() => unknown} fn may return a promise
   */
  beforeExit(fn) {
    if (typeof fn !== 'function') throw new TypeError('beforeExit takes a function');
    this.#beforeExit.push(fn);
  }

  /**
   * Ends the process with `status` once the `beforeExit` work is done, or
   * after `exitTimeoutMs` whatever it does. Calling it again returns the
   * same promise: the first status wins.
   *
   * @param {number} [status]
   * @param {Promise<unknown>} [first] something else to wait for, within the same bound
   * @returns {Promise<void>}
   */
  exit(status = 0, first = Promise.resolve()) {
    if (this.#exiting !== null) return this.#exiting;
    this.stopHeartbeat();
    const work = (async () => {
      await first;
      for (const fn of this.#beforeExit) {
        await fn();
      }
    })().catch((error) => warn(`before exit: ${describe(error)}`));
    let timer;
    const timeout = new Promise((resolve) => {
      // A referenced timer: it must fire even if nothing else is pending.
      timer = setTimeout(() => {
        warn(`exiting after ${this.#exitTimeoutMs} ms without waiting for the rest`);
        resolve();
      }, this.#exitTimeoutMs);
    });
    this.#exiting = Promise.race([work, timeout]).then(() => {
      clearTimeout(timer);
      this.#exit(status);
    });
    return this.#exiting;
  }

  /** Whether `exit()` has been called. */
  get exiting() {
    return this.#exiting !== null;
  }

  /** Whether a SIGTERM (or SIGINT) handled by `onSigterm` is stopping the worker. */
  get stopping() {
    return this.#stopping;
  }

  /**
   * Stops cleanly on SIGTERM (what `wa-ctl stop` sends) and SIGINT (Ctrl-C
   * by hand): stops the heartbeat, calls `sock.end(undefined)`, waits for
   * the socket's close and the `beforeExit` work, and exits 0, all within
   * `exitTimeoutMs`. It reports no `closed`: an operator stop is not a
   * connection failure, and the supervisor applies no policy to it.
   *
   * @param {{end: (error?: Error) => void}} [sock] the Baileys socket, if any
   * @param {object} [options]
   * @param {Promise<unknown>} [options.socketClosed] settles when the socket has closed
   * @param {NodeJS.Signals[]} [options.signals] default `['SIGTERM', 'SIGINT']`
   * @returns {() => void} removes the handlers
   */
  onSigterm(sock, { socketClosed = Promise.resolve(), signals = ['SIGTERM', 'SIGINT'] } = {}) {
    const handler = () => {
      if (this.#stopping || this.exiting) return;
      this.#stopping = true;
      try {
        sock?.end(undefined);
      } catch (error) {
        warn(`ending the socket: ${describe(error)}`);
      }
      this.exit(0, socketClosed);
    };
    for (const signal of signals) process.on(signal, handler);
    return () => {
      for (const signal of signals) process.off(signal, handler);
    };
  }

  /**
   * Connects a Baileys socket to the protocol:
   *
   * - `qr` updates become `qr` events, or, with WA_CTL_PAIR_PHONE, the first
   *   one asks `sock.requestPairingCode` for a `pair_code` instead;
   * - `connection: 'open'` becomes `connected` with `sock.user.id`;
   * - `connection: 'close'` becomes `closed` with
   *   `lastDisconnect.error.output.statusCode` (see {@link closeFromBaileys}),
   *   and the worker exits 0 after `saveCreds`: it never reconnects;
   * - the heartbeat starts, and SIGTERM is handled as in `onSigterm`.
   *
   * @param {object} sock what `makeWASocket` returned
   * @param {object} [options]
   * @param {() => unknown} [options.saveCreds] awaited before every exit, so that the
   *   credentials of a fresh pairing (closed 515) are on disk
   * @param {number|false} [options.heartbeatMs] the `alive` interval, or `false` for none
   * @param {string} [options.pairPhone] default WA_CTL_PAIR_PHONE
   * @param {boolean} [options.handleSignals] install the SIGTERM handler (default true)
   * @returns {() => void} detaches the listener, the heartbeat and the signal handlers
   */
  attachBaileys(sock, { saveCreds, heartbeatMs = HEARTBEAT_INTERVAL_MS, pairPhone = this.pairPhone, handleSignals = true } = {}) {
    if (saveCreds !== undefined) this.beforeExit(saveCreds);
    let pairCodeRequested = false;
    let markSocketClosed;
    const socketClosed = new Promise((resolve) => {
      markSocketClosed = resolve;
    });

    const onUpdate = ({ connection, qr, lastDisconnect } = {}) => {
      if (connection === 'close') markSocketClosed();
      // After a close was reported, or during a stop, nothing more is news:
      // in particular the close that `sock.end()` causes is not a failure.
      if (this.#stopping || this.exiting) return;
      if (qr) {
        if (!pairPhone) {
          this.qr(qr);
        } else if (!pairCodeRequested) {
          pairCodeRequested = true;
          this.#requestPairCode(sock, pairPhone, qr);
        }
      }
      if (connection === 'open') this.connected(sock.user?.id);
      if (connection === 'close') {
        const event = closeFromBaileys(lastDisconnect);
        this.send(event);
        this.exit(0);
      }
    };
    sock.ev.on('connection.update', onUpdate);
    const stopHeartbeat = heartbeatMs === false ? () => {} : this.startHeartbeat(heartbeatMs);
    const removeSignals = handleSignals ? this.onSigterm(sock, { socketClosed }) : () => {};
    return () => {
      sock.ev.off?.('connection.update', onUpdate);
      stopHeartbeat();
      removeSignals();
    };
  }

  async #requestPairCode(sock, phone, qr) {
    let code;
    try {
      code = await sock.requestPairingCode(phone);
    } catch (error) {
      // A worker that cannot give a pair code may give the QR code instead
      // (docs/worker-protocol.md, WA_CTL_PAIR_PHONE).
      warn(`requesting a pair code failed, reporting the QR code instead: ${describe(error)}`);
      if (!this.exiting) this.qr(qr);
      return;
    }
    if (!this.exiting) this.pairCode(formatPairCode(code));
  }
}

/**
 * The event that reports a Baileys close, from `connection.update`'s
 * `lastDisconnect`:
 *
 * - a Boom error's `output.statusCode` is the close code, its message the reason;
 * - Baileys' "QR refs attempts ended" (a 408) is `pairing_expired`;
 * - no status code (no error, or one that is not a Boom error) is
 *   {@link CODE_WITHOUT_STATUS}, 428, with the error's message if it has one.
 *
 * @param {{error?: any} | undefined} lastDisconnect
 * @returns {{event: 'closed', code: number, reason: string} | {event: 'pairing_expired'}}
 */
export function closeFromBaileys(lastDisconnect) {
  const error = lastDisconnect?.error;
  const statusCode = error?.output?.statusCode;
  const message = typeof error?.message === 'string' ? error.message : '';
  if (isCloseCode(statusCode)) {
    if (statusCode === 408 && message === BAILEYS_QR_EXHAUSTED) return { event: 'pairing_expired' };
    return { event: 'closed', code: statusCode, reason: message };
  }
  return { event: 'closed', code: CODE_WITHOUT_STATUS, reason: message || 'connection closed without a status code' };
}

/** Baileys gives 8 characters; WhatsApp shows them as ABCD-EFGH, and so does the protocol. */
function formatPairCode(code) {
  const text = String(code);
  return /^[0-9A-Za-z]{8}$/.test(text) ? `${text.slice(0, 4)}-${text.slice(4)}` : text;
}

function parseDescriptor(raw) {
  const fd = /^[0-9]{1,9}$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(fd)) {
    throw new Error(`WA_CTL_EVENTS_FD is not a descriptor number: ${JSON.stringify(raw)}`);
  }
  try {
    fs.fstatSync(fd);
  } catch (error) {
    throw new Error(`WA_CTL_EVENTS_FD=${fd} is not an open descriptor (${error.code}): run this worker from wa-ctl, or leave the variable unset to write events to stdout`);
  }
  return fd;
}

// One write(2) for the line, as the protocol asks. The loop only matters in
// the rare cases the kernel takes part of it: a line over the pipe's atomic
// size, or a descriptor that another part of the process made non-blocking
// (Node does that to stdout when it is a pipe and something used
// `process.stdout`). The supervisor's descriptor is blocking, so there the
// write itself waits for the reader. On a non-blocking one, Node has no
// synchronous way to wait until it is writable, so the write is retried
// every 5 ms until the reader catches up: the protocol's back-pressure.
function writeFully(fd, buffer) {
  let offset = 0;
  while (offset < buffer.length) {
    try {
      offset += fs.writeSync(fd, buffer, offset, buffer.length - offset);
    } catch (error) {
      if (error.code !== 'EAGAIN') throw error;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    }
  }
}

function isCloseCode(code) {
  return Number.isInteger(code) && code >= 0 && code <= 65535;
}

function checkString(value, what) {
  if (typeof value !== 'string' || value === '') throw new TypeError(`${what} must be a non-empty string`);
  return value;
}

function checkPositiveInteger(value, what) {
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${what} must be a positive whole number of milliseconds, got ${String(value)}`);
  return value;
}

function describe(error) {
  return error instanceof Error ? error.message : String(error);
}

function warn(message) {
  process.stderr.write(`wa-ctl-worker: ${message}\n`);
}
