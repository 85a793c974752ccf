// Runs the fake worker as a real child process with an events pipe on
// descriptor 3, and reads its lines. Every wait has a deadline, and every
// child is killed when its test ends, so that nothing can hang the suite.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const FIXTURE = fileURLToPath(new URL('./fake-baileys-worker.mjs', import.meta.url));

/** The deadline for anything a test waits on. Generous: CI machines are shared. */
export const DEADLINE_MS = 10_000;

/** Options for every test: a test that outlives this fails instead of
 * hanging the suite (node --test has no timeout of its own). */
export const LIMIT = { timeout: 3 * DEADLINE_MS };

/** The JSON lines of one stream of the child, parsed as they arrive. */
class Lines {
  /** Every line so far, parsed. A line that is not JSON fails the test. */
  lines = [];
  #waiters = new Set();
  #ended = false;

  constructor(stream, name) {
    let buffer = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf('\n')) !== -1) {
        const text = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        let value;
        try {
          value = JSON.parse(text);
        } catch {
          value = { not_json: text };
        }
        this.lines.push({ value, at: performance.now() });
        this.#notify();
      }
    });
    this.done = new Promise((resolve) => {
      stream.on('close', () => {
        if (buffer !== '') this.lines.push({ value: { unterminated: buffer }, at: performance.now() });
        this.#ended = true;
        this.#notify();
        resolve(this.values());
      });
    });
    this.name = name;
  }

  values() {
    return this.lines.map((line) => line.value);
  }

  /**
   * Waits until `count` lines satisfy `predicate`, and returns them with
   * the time each arrived. Rejects at the deadline or at the end of the
   * stream.
   */
  waitFor(predicate, { count = 1, timeoutMs = DEADLINE_MS, what = 'a line' } = {}) {
    return new Promise((resolve, reject) => {
      const waiter = () => {
        const matching = this.lines.filter((line) => predicate(line.value));
        if (matching.length >= count) {
          finish();
          resolve(matching.slice(0, count));
        } else if (this.#ended) {
          finish();
          reject(new Error(`${this.name} ended before ${what} (${matching.length} of ${count}): ${JSON.stringify(this.values())}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`no ${what} on ${this.name} within ${timeoutMs} ms: ${JSON.stringify(this.values())}`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
      };
      this.#waiters.add(waiter);
      waiter();
    });
  }

  #notify() {
    for (const waiter of [...this.#waiters]) waiter();
  }
}

/**
 * Starts the fake worker with `config` (see fake-baileys-worker.mjs), and
 * kills it when the test `t` ends if it still runs.
 *
 * @param {import('node:test').TestContext} t
 * @param {object} config
 * @param {{env?: object, eventsFd?: boolean}} [options] `eventsFd: false`
 *   leaves WA_CTL_EVENTS_FD unset, as when a worker is run by hand
 */
export function startWorker(t, config, { env = {}, eventsFd = true } = {}) {
  const child = spawn(process.execPath, [FIXTURE, JSON.stringify(config)], {
    stdio: ['ignore', 'pipe', 'inherit', eventsFd ? 'pipe' : 'ignore'],
    env: {
      PATH: process.env.PATH,
      WA_CTL_SESSION_ID: 'test',
      WA_CTL_SESSION_DIR: '/nonexistent/wa-ctl-test',
      ...(eventsFd ? { WA_CTL_EVENTS_FD: '3' } : {}),
      ...env,
    },
  });
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal, at: performance.now() }));
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return {
    child,
    events: eventsFd ? new Lines(child.stdio[3], 'the events pipe') : null,
    spies: new Lines(child.stdout, 'stdout'),
    exited,
    /** The exit, or a rejection at the deadline. */
    exit(timeoutMs = DEADLINE_MS) {
      return withDeadline(exited, timeoutMs, 'the worker to exit');
    },
  };
}

/** `promise`, or a rejection after `timeoutMs`. */
export function withDeadline(promise, timeoutMs, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`waited more than ${timeoutMs} ms for ${what}`)), timeoutMs);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** A Boom-shaped close, as attachBaileys sees it in `lastDisconnect`. */
export function boomClose(statusCode, message) {
  return { connection: 'close', lastDisconnect: { error: { boom: statusCode, message } } };
}
