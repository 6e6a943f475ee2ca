#!/usr/bin/env node
'use strict';
// Checks that server.js speaks PROTOCOL.md: starts it with 2 workers on 127.0.0.1 (free port),
// drives it with `ws` clients spread over both workers, then kills a worker (it must be
// replaced) and stops the tree with SIGTERM (every process must be gone).
// Run: npm install && node selftest.js        (about 3 s; exit 0 = all passed)

const { spawn, execFileSync } = require('node:child_process');
const http = require('node:http');
const path = require('node:path');
const WebSocket = require('ws');

let passed = 0;
let failed = 0;
function check(cond, what) {
  if (cond) passed++;
  else {
    failed++;
    console.log(`FAIL: ${what}`);
  }
}

class Client {
  constructor(url, raw = false) {
    this.ws = new WebSocket(url);
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    this.ws.on('message', (d, isBinary) => {
      const v = isBinary ? d : raw ? d.toString() : JSON.parse(d.toString());
      this.queue.push(v);
      this.#wake();
    });
    this.ws.on('close', (code) => {
      this.closed = code;
      this.#wake();
    });
    this.ws.on('error', () => {});
  }
  #wake() {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }
  open() {
    return new Promise((res, rej) => {
      this.ws.once('open', res);
      this.ws.once('error', rej);
    });
  }
  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }
  // Next received frame matching pred (frames before it that do not match are kept).
  async next(pred = () => true, ms = 2000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.queue.findIndex(pred);
      if (i >= 0) return this.queue.splice(i, 1)[0];
      if (this.closed !== null) throw new Error(`closed ${this.closed} while waiting`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout; queue=${JSON.stringify(this.queue).slice(0, 300)}`);
      await new Promise((res) => {
        const t = setTimeout(res, left);
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }
  // Frames that arrive within ms (drains the queue).
  async quiet(ms = 150) {
    await new Promise((r) => setTimeout(r, ms));
    const q = this.queue;
    this.queue = [];
    return q;
  }
  close() {
    this.ws.close();
  }
}

const type = (t, extra = {}) => (m) => m.type === t && Object.entries(extra).every(([k, v]) => JSON.stringify(m[k]) === JSON.stringify(v));

function get(url) {
  return new Promise((res, rej) => http.get(url, (r) => { r.resume(); r.on('end', () => res(r.statusCode)); }).on('error', rej));
}

function children(pid) {
  try {
    return execFileSync('pgrep', ['-P', String(pid)]).toString().trim().split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function main() {
  const srv = spawn(process.execPath, [path.join(__dirname, 'server.js'), '--workers', '2', '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const addr = await new Promise((res, rej) => {
    let buf = '';
    srv.stdout.on('data', (d) => {
      buf += d;
      const m = /peer ready listen=(\S+) workers=2/.exec(buf);
      if (m) res(m[1]);
    });
    srv.on('exit', (c) => rej(new Error(`server exited ${c}`)));
    setTimeout(() => rej(new Error('no ready line')), 5000);
  });
  const base = `ws://${addr}`;
  process.on('uncaughtException', (e) => {
    console.log(`FAIL: ${e.stack}`);
    try { srv.kill('SIGKILL'); } catch {}
    process.exit(1);
  });
  try {
    check((await get(`http://${addr}/health`)) === 200, 'GET /health is 200');

    // Four clients; round-robin scheduling spreads them over both workers.
    const cs = [];
    for (let i = 0; i < 4; i++) {
      const c = new Client(`${base}/ws`);
      await c.open();
      cs.push(c);
    }
    const welcomes = [];
    for (const c of cs) welcomes.push(await c.next(type('welcome')));
    for (const w of welcomes) check(Number.isInteger(w.worker) && typeof w.id === 'string', `welcome shape ${JSON.stringify(w)}`);
    check(new Set(welcomes.map((w) => w.id)).size === 4, 'connection ids are unique');
    check(new Set(welcomes.map((w) => w.worker)).size === 2, `clients on both workers: ${welcomes.map((w) => w.worker)}`);
    // a, b: members on different workers; c: publisher (not a member); d: bystander.
    const a = cs[welcomes.findIndex((w) => w.worker === welcomes[0].worker)];
    const b = cs[welcomes.findIndex((w) => w.worker !== welcomes[0].worker)];
    const [c, d] = cs.filter((x) => x !== a && x !== b);
    const idOf = (x) => welcomes[cs.indexOf(x)].id;

    a.send({ type: 'join', room: 'r1', id: 1 });
    check((await a.next()).type === 'joined', 'joined comes first');
    check(JSON.stringify(await a.next()) === '{"type":"ack","id":1}', 'join ack');
    b.send({ type: 'join', room: 'r1', id: 'j' });
    check(JSON.stringify(await b.next()) === '{"type":"joined","room":"r1"}', 'b joined');
    check(JSON.stringify(await b.next()) === '{"type":"ack","id":"j"}', 'b join ack');
    const pj = await a.next(type('presence'));
    check(pj.room === 'r1' && pj.event === 'join' && pj.id === idOf(b), `presence join to a (other worker): ${JSON.stringify(pj)}`);
    check((await b.quiet()).length === 0, 'the joiner gets no presence about itself');

    // Ordering: 200 publishes from a non-member on a worker; seq 1..200, acks carry seq.
    const N = 200;
    for (let i = 0; i < N; i++) c.send({ type: 'publish', room: 'r1', data: { i, s: 'x' }, id: i });
    let ok = true;
    for (let i = 0; i < N; i++) {
      const ack = await c.next(type('ack'));
      if (ack.id !== i || ack.seq !== i + 1) ok = false;
    }
    check(ok, 'publish acks in order with seq 1..N');
    for (const m of [a, b]) {
      let inOrder = true;
      for (let i = 0; i < N; i++) {
        const msg = await m.next(type('message'));
        if (msg.room !== 'r1' || msg.seq !== i + 1 || msg.data.i !== i || msg.data.s !== 'x') inOrder = false;
      }
      check(inOrder, 'members on both workers get every message, in seq order');
    }
    check((await c.quiet()).length === 0 && (await d.quiet(10)).length === 0, 'non-members get nothing');

    // A member publisher receives its own message; publish without id gets no ack.
    b.send({ type: 'publish', room: 'r1', data: 'self' });
    const selfMsg = await b.next(type('message'));
    check(selfMsg.seq === N + 1 && selfMsg.data === 'self', 'publishing member receives its own message');
    await a.next(type('message', { seq: N + 1 }));
    check((await b.quiet()).length === 0, 'no ack without id');

    // Broadcast reaches every /ws client on every worker, without room or seq.
    d.send({ type: 'broadcast', data: [1, 'two'], id: { k: 1 } });
    check(JSON.stringify(await d.next(type('ack'))) === '{"type":"ack","id":{"k":1}}', 'broadcast ack');
    for (const x of cs) check(JSON.stringify(await x.next(type('message'))) === '{"type":"message","data":[1,"two"]}', 'broadcast delivered');

    // Leave: left + ack, presence leave to the rest, no more messages.
    b.send({ type: 'leave', room: 'r1', id: 7 });
    check(JSON.stringify(await b.next()) === '{"type":"left","room":"r1"}', 'left');
    check(JSON.stringify(await b.next()) === '{"type":"ack","id":7}', 'leave ack');
    const pl = await a.next(type('presence'));
    check(pl.event === 'leave' && pl.id === idOf(b), 'presence leave');
    c.send({ type: 'publish', room: 'r1', data: 0, id: 'p' });
    check((await c.next(type('ack'))).seq === N + 2, 'seq keeps counting');
    await a.next(type('message', { seq: N + 2 }));
    check((await b.quiet()).length === 0, 'a left member gets nothing');
    b.send({ type: 'leave', room: 'r1' });
    check((await b.next()).type === 'left', 'leaving a room one is not in is answered');

    // Error frames; the connection stays open after each.
    const errs = [
      ['{not json', 'bad_json'],
      ['[1,2]', 'bad_json'],
      [{ room: 'x' }, 'missing_field'],
      [{ type: 5 }, 'invalid_field'],
      [{ type: 'dance' }, 'unknown_type'],
      [{ type: 'join' }, 'missing_field'],
      [{ type: 'join', room: 3 }, 'invalid_field'],
      [{ type: 'join', room: '' }, 'bad_room'],
      [{ type: 'join', room: 'a\nb' }, 'bad_room'],
      [{ type: 'join', room: 'é'.repeat(65) }, 'bad_room'],
      [{ type: 'publish', room: 'r1' }, 'missing_field'],
      [{ type: 'broadcast' }, 'missing_field'],
    ];
    for (const [frame, code] of errs) {
      d.send(frame);
      const e = await d.next();
      check(e.type === 'error' && e.code === code && typeof e.message === 'string', `error ${code} for ${JSON.stringify(frame)}: got ${JSON.stringify(e)}`);
    }
    d.send({ type: 'join', room: 'x'.repeat(128) });
    check((await d.next()).type === 'joined', '128-byte room is fine');
    for (let i = 1; i < 64; i++) d.send({ type: 'join', room: `many${i}` });
    for (let i = 1; i < 64; i++) await d.next(type('joined'));
    d.send({ type: 'join', room: 'one-too-many', id: 9 });
    const tm = await d.next();
    check(tm.type === 'error' && tm.code === 'too_many_rooms' && tm.id === 9, `too_many_rooms, carrying the id: ${JSON.stringify(tm)}`);
    d.send({ type: 'join', room: 'many5' });
    check((await d.next()).type === 'joined', 'rejoining a room already joined still works at the limit');

    // Rate limit: 1,000 requests/s with a burst of 1,000 (wsfleet's default).
    const rl = new Client(`${base}/ws`);
    await rl.open();
    await rl.next(type('welcome'));
    for (let i = 0; i < 1300; i++) rl.send({ type: 'leave', room: 'z' });
    await rl.next(type('error', { code: 'rate_limited' }));
    const rest = await rl.quiet(300);
    const limited = 1 + rest.filter(type('error', { code: 'rate_limited' })).length;
    check(limited >= 100 && limited <= 300 && rl.closed === null, `rate_limited for the excess, connection kept (${limited})`);
    rl.close();

    // Closing a member tells the others.
    const e2 = new Client(`${base}/ws`);
    await e2.open();
    const we = await e2.next(type('welcome'));
    e2.send({ type: 'join', room: 'r1' });
    await e2.next(type('joined'));
    await a.next(type('presence', { event: 'join', id: we.id }));
    e2.close();
    await a.next(type('presence', { event: 'leave', id: we.id }));
    check(true, 'disconnect sends presence leave');

    // Too big: 1009.
    const big = new Client(`${base}/ws`);
    await big.open();
    await big.next(type('welcome'));
    big.ws.send('x'.repeat(64 * 1024 + 1));
    await new Promise((r) => setTimeout(r, 300));
    check(big.closed === 1009, `1009 for a message over 64 KiB (got ${big.closed})`);

    // Echo endpoint.
    const echo = new Client(`${base}/echo`, true);
    await echo.open();
    echo.ws.send('hello');
    check((await echo.next()) === 'hello', 'echo text');
    echo.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    const eb = await echo.next();
    check(Buffer.isBuffer(eb) && eb.equals(Buffer.from([1, 2, 3])), 'echo binary');
    echo.close();

    // Kill -9 one worker: clients on it drop, the primary forks a replacement, ids stay unique.
    const before = children(srv.pid);
    check(before.length === 2, `two worker processes (${before})`);
    process.kill(before[0], 'SIGKILL');
    await new Promise((r) => setTimeout(r, 1000));
    const after = children(srv.pid);
    check(after.length === 2 && !after.includes(before[0]), `killed worker replaced (${before} -> ${after})`);
    const ids = new Set();
    for (let i = 0; i < 4; i++) {
      const x = new Client(`${base}/ws`);
      await x.open();
      const w = await x.next(type('welcome'));
      check(!welcomes.some((o) => o.id === w.id), `fresh id after restart ${w.id}`);
      ids.add(w.id);
      x.send({ type: 'join', room: 'after', id: i });
      await x.next(type('ack'));
      x.close();
    }
    check(ids.size === 4, 'ids unique after restart');
    check((await get(`http://${addr}/health`)) === 200, 'healthy after restart');

    // SIGHUP: rolling restart. Clients of the old workers get 1012; new workers replace both;
    // room seq survives (it lives in the primary).
    const old = children(srv.pid);
    const h = new Client(`${base}/ws`);
    await h.open();
    await h.next(type('welcome'));
    process.kill(srv.pid, 'SIGHUP');
    for (let i = 0; i < 50 && h.closed === null; i++) await new Promise((r) => setTimeout(r, 100));
    check(h.closed === 1012, `1012 on rolling restart (got ${h.closed})`);
    await new Promise((r) => setTimeout(r, 1500));
    const fresh = children(srv.pid);
    check(fresh.length === 2 && fresh.every((p) => !old.includes(p)), `both workers replaced (${old} -> ${fresh})`);
    const h2 = new Client(`${base}/ws`);
    await h2.open();
    await h2.next(type('welcome'));
    h2.send({ type: 'publish', room: 'r1', data: 1, id: 'after-hup' });
    check((await h2.next(type('ack'))).seq === N + 3, 'seq continues across a rolling restart');
    h2.close();
    for (const x of cs) x.close();

    // SIGTERM stops the whole tree.
    const tree = [srv.pid, ...children(srv.pid)];
    const exited = new Promise((r) => srv.on('exit', r));
    srv.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 6000))]);
    await new Promise((r) => setTimeout(r, 200));
    const alive = tree.filter((p) => { try { process.kill(p, 0); return true; } catch { return false; } });
    check(alive.length === 0, `SIGTERM stops every process (still alive: ${alive})`);
  } catch (e) {
    failed++;
    console.log(`FAIL: ${e.stack}`);
  } finally {
    try { srv.kill('SIGKILL'); } catch {}
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main();
