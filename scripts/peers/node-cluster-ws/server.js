#!/usr/bin/env node
'use strict';
// The comparison peer for `scripts/bench.sh`: the stack of the Node.js article we answer
// ("Scaling WebSocket Applications in Node.js"), written the way a competent Node developer
// would ship it, minus Redis: a `cluster` primary forks one worker per CPU, the workers share
// the port through cluster (default scheduling: round-robin, the primary accepts and hands the
// sockets out), each worker runs `ws`, and rooms are relayed through the primary over the
// cluster IPC channel instead of a Redis adapter.
//
// It speaks the wsfleet client protocol (PROTOCOL.md) exactly, so `wsfleet bench` drives it
// unchanged:
//   /ws     JSON rooms protocol (welcome, join/joined, leave/left, publish -> message with a
//           per-room seq assigned by the primary, broadcast, ack, presence, error frames)
//   /echo   echo of every text/binary message
//   GET /health  200 while serving, 503 while draining
//
// Routing by interest, as in wsfleet: a worker tells the primary when it gains its first or
// loses its last local member of a room; the primary builds each outgoing frame ONCE as a
// string and sends it only to the interested workers; a worker turns it into one Buffer and
// hands that same Buffer to every local member (no per-recipient JSON.stringify or encoding).
//
// Usage: node server.js [--port P] [--host H] [--workers N]
//   env fallbacks: PEER_PORT, PEER_HOST, PEER_WORKERS (also WEB_CONCURRENCY)
//   --port 0 (the default) picks a free port: the primary binds HOST:0 once, reads the port,
//   closes it and starts the workers on that explicit port. (Plain cluster listen(0) would
//   also share one random port, but a worker forked after all others died would get a new
//   one; an explicit port survives restarts.) The tiny window between close and the workers'
//   listen is harmless on a test box; pass an explicit port in production.
// Prints `peer ready listen=HOST:PORT workers=N` on stdout once every worker listens.
// SIGTERM/SIGINT to the primary drains the workers (close 1012) and exits the whole tree.
// A worker that dies is replaced in its slot (cluster 'exit' -> fork), as in the article.
// SIGHUP: rolling restart (new worker per slot first, then the old one drains), like wsfleet's.

const cluster = require('node:cluster');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const { performance } = require('node:perf_hooks');

const MAX_PAYLOAD = 64 * 1024; // PROTOCOL.md: 1009 above 64 KiB
const MAX_ROOMS_PER_CONN = 64;
const MAX_ROOM_BYTES = 128;
// The limits below default to wsfleet's own defaults (WorkerSettings), so both servers
// enforce the same rules during the benchmark.
// A client with more than this many bytes queued towards it is closed with 1013.
const OUTBOX_LIMIT = Number(process.env.PEER_OUTBOX_LIMIT_BYTES || 1024 * 1024);
// Requests per second per /ws connection (token bucket, burst of the same size); 0 = off.
const RATE_LIMIT = Number(process.env.PEER_RATE_LIMIT_PER_SEC ?? 1000);
const PING_INTERVAL_MS = Number(process.env.PEER_PING_INTERVAL_MS || 20000);
const CORK = process.env.PEER_CORK !== '0'; // batch fan-out writes per socket (see deliver())
const DRAIN_GRACE_MS = Number(process.env.PEER_DRAIN_GRACE_MS || 1000);
// PEER_DEFLATE=1: permessage-deflate on, as ws users turn it on (ws's defaults, with the
// threshold at wsfleet's 128 B instead of 1 KiB); ws compresses per socket.
const DEFLATE = process.env.PEER_DEFLATE === '1' ? { threshold: 128 } : false;

function parseArgs(argv) {
  const o = {
    port: process.env.PEER_PORT || '0',
    host: process.env.PEER_HOST || '127.0.0.1',
    workers: process.env.PEER_WORKERS || process.env.WEB_CONCURRENCY || '',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    const val = () => (eq > 0 ? a.slice(eq + 1) : argv[++i]);
    if (name === '--port') o.port = val();
    else if (name === '--host') o.host = val();
    else if (name === '--workers') o.workers = val();
    else if (name === '--help' || name === '-h') {
      process.stdout.write('usage: node server.js [--port P] [--host 127.0.0.1] [--workers N]\n');
      process.exit(0);
    } else {
      process.stderr.write(`peer: unknown argument ${a}\n`);
      process.exit(2);
    }
  }
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const workers = o.workers === '' ? cpus : Number(o.workers);
  const port = Number(o.port);
  if (!Number.isInteger(workers) || workers < 1) {
    process.stderr.write(`peer: bad --workers ${o.workers}\n`);
    process.exit(2);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`peer: bad --port ${o.port}\n`);
    process.exit(2);
  }
  return { port, host: o.host, workers };
}

if (cluster.isPrimary) primary(parseArgs(process.argv.slice(2)));
else worker();

// ---------------------------------------------------------------------------------------------
// Primary: forks and restarts workers, orders publishes (per-room seq), relays by interest.
// ---------------------------------------------------------------------------------------------

function primary(opts) {
  const { host, workers: n } = opts;
  const slots = new Array(n).fill(null); // slot -> the current cluster.Worker of that slot
  const generation = new Array(n).fill(0); // slot -> incarnation, part of connection ids
  const live = new Set(); // every worker process alive, current or draining (rolling restart)
  const interest = new Map(); // room -> Set<cluster.Worker> with local members
  const seqs = new Map(); // room -> last seq (kept for the life of the fleet)
  let shuttingDown = false;
  let reloading = false;
  let announced = false;
  let port = opts.port;

  function send(w, msg) {
    if (w.isConnected()) w.send(msg);
  }

  function fork(slot) {
    generation[slot] += 1;
    const w = cluster.fork({
      PEER_SLOT: String(slot),
      PEER_GEN: String(generation[slot]),
      PEER_LISTEN_PORT: String(port),
      PEER_LISTEN_HOST: host,
    });
    w.slot = slot;
    slots[slot] = w;
    live.add(w);
    w.on('message', (m) => onWorkerMessage(w, m));
    return w;
  }

  function onWorkerMessage(w, m) {
    switch (m.t) {
      case 'p': { // publish: order it, fan out to interested workers, ack the publisher
        const seq = (seqs.get(m.r) || 0) + 1;
        seqs.set(m.r, seq);
        const set = interest.get(m.r);
        if (set !== undefined) {
          const frame = '{"type":"message","room":' + JSON.stringify(m.r) + ',"seq":' + seq + ',"data":' + m.d + '}';
          const out = { t: 'm', r: m.r, f: frame };
          for (const x of set) send(x, out);
        }
        if (m.a !== undefined) send(w, { t: 'o', c: m.c, f: '{"type":"ack","id":' + m.a + ',"seq":' + seq + '}' });
        break;
      }
      case 'b': { // broadcast to every /ws client of every worker (draining ones included)
        const out = { t: 'bc', f: '{"type":"message","data":' + m.d + '}' };
        for (const x of live) send(x, out);
        if (m.a !== undefined) send(w, { t: 'o', c: m.c, f: '{"type":"ack","id":' + m.a + '}' });
        break;
      }
      case 'pr': { // presence: to the room's other members (the subject is skipped locally)
        const set = interest.get(m.r);
        if (set === undefined) break;
        const frame = '{"type":"presence","room":' + JSON.stringify(m.r) + ',"event":"' + m.e + '","id":' + JSON.stringify(m.id) + '}';
        for (const x of set) send(x, x === w ? { t: 'm', r: m.r, f: frame, s: m.c } : { t: 'm', r: m.r, f: frame });
        break;
      }
      case 'i': { // interest on/off; "on" is acknowledged so pending joins complete after it
        let set = interest.get(m.r);
        if (m.on) {
          if (set === undefined) interest.set(m.r, (set = new Set()));
          set.add(w);
          send(w, { t: 'ia', r: m.r, n: m.n });
        } else if (set !== undefined) {
          set.delete(w);
          if (set.size === 0) interest.delete(m.r);
        }
        break;
      }
      default:
        process.stderr.write(`peer primary: unknown message from worker ${w.slot}: ${JSON.stringify(m)}\n`);
    }
  }

  // A worker died: forget its interests; replace it if it was its slot's current worker (a
  // crash or kill, not the old half of a rolling restart) unless we are stopping.
  cluster.on('exit', (w, code, signal) => {
    live.delete(w);
    for (const [room, set] of interest) {
      if (set.delete(w) && set.size === 0) interest.delete(room);
    }
    if (shuttingDown) {
      if (live.size === 0) process.exit(0);
      return;
    }
    if (slots[w.slot] !== w) return;
    process.stderr.write(`peer: worker slot ${w.slot} pid ${w.process.pid} exited (${signal || code}); forking a new one\n`);
    fork(w.slot);
  });

  const listening = new Set();
  cluster.on('listening', (w) => {
    listening.add(w.slot);
    if (!announced && listening.size === n) {
      announced = true;
      process.stdout.write(`peer ready listen=${host}:${port} workers=${n}\n`);
    }
  });

  // SIGHUP: rolling restart, one slot at a time: fork the slot's new worker, and once it
  // listens tell the old one to drain (close its clients with 1012, as wsfleet does), then
  // move on when the old one has exited. Not in the article (its stack restarts workers only
  // when they die); added so the rolling-restart churn row has a Node figure too.
  async function rollingRestart() {
    if (reloading || shuttingDown) return;
    reloading = true;
    process.stderr.write(`peer: SIGHUP: rolling restart of ${n} workers\n`);
    for (let slot = 0; slot < n && !shuttingDown; slot++) {
      const old = slots[slot];
      const fresh = fork(slot);
      await new Promise((res) => {
        const onListen = (w) => { if (w === fresh) { cluster.off('listening', onListen); res(); } };
        cluster.on('listening', onListen);
        fresh.once('exit', res);
      });
      if (old !== null && live.has(old)) {
        await new Promise((res) => {
          old.once('exit', res);
          send(old, { t: 'stop' });
        });
      }
    }
    reloading = false;
  }

  function shutdown(sig) {
    if (shuttingDown) return;
    shuttingDown = true;
    process.stderr.write(`peer: ${sig}: draining ${live.size} workers\n`);
    if (live.size === 0) process.exit(0);
    for (const w of live) {
      if (w.isConnected()) w.send({ t: 'stop' });
      else w.process.kill('SIGKILL');
    }
    // Whatever has not exited after the grace period is killed.
    setTimeout(() => {
      for (const w of live) w.process.kill('SIGKILL');
      process.exit(0);
    }, DRAIN_GRACE_MS + 4000).unref();
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => rollingRestart());

  function start() {
    for (let s = 0; s < n; s++) fork(s);
  }
  if (port !== 0) start();
  else {
    const probe = net.createServer();
    probe.on('error', (e) => {
      process.stderr.write(`peer: cannot bind ${host}:0: ${e.message}\n`);
      process.exit(1);
    });
    probe.listen(0, host, () => {
      port = probe.address().port;
      probe.close(start);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Worker: one http server + two WebSocketServers (noServer), local room membership.
// ---------------------------------------------------------------------------------------------

function worker() {
  const { WebSocketServer, WebSocket } = require('ws');
  const OPEN = WebSocket.OPEN;
  const slot = Number(process.env.PEER_SLOT);
  const gen = process.env.PEER_GEN;
  const port = Number(process.env.PEER_LISTEN_PORT);
  const host = process.env.PEER_LISTEN_HOST;
  const idPrefix = slot + '.' + gen + '.';
  const TEXT = { binary: false };
  const BINARY = { binary: true };

  let nextConn = 1;
  let draining = false;
  const conns = new Map(); // local key -> ws (for acks routed back by the primary)
  // room -> { members: Set<ws>, ready: bool, n: interest request number, pending: [[ws, idJson]] }
  const rooms = new Map();
  let interestSeq = 0;

  const wssRooms = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD, perMessageDeflate: DEFLATE });
  const wssEcho = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD, perMessageDeflate: DEFLATE, clientTracking: false });

  const server = http.createServer((req, res) => {
    const path = pathOf(req.url);
    if (path === '/health' && (req.method === 'GET' || req.method === 'HEAD')) {
      res.writeHead(draining ? 503 : 200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end(draining ? 'draining\n' : 'ok\n');
    } else if (path === '/' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('wsfleet peer (node cluster + ws): WebSocket endpoints /ws and /echo\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    }
  });
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 5000; // slowloris guard for the upgrade request, like wsfleet's 5 s

  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => {}); // a reset during the handshake must not crash the worker
    const path = pathOf(req.url);
    const wss = path === '/ws' ? wssRooms : path === '/echo' ? wssEcho : null;
    if (wss === null || draining) {
      const status = draining ? '503 Service Unavailable' : '404 Not Found';
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.sock = socket; // our own handle on the TCP socket, for cork() in deliver()
      wss.emit('connection', ws, req);
    });
  });

  wssEcho.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('message', (data, isBinary) => ws.send(data, isBinary ? BINARY : TEXT));
  });

  wssRooms.on('connection', (ws) => {
    const key = nextConn++;
    ws.key = key;
    ws.cid = idPrefix + key;
    ws.rooms = null; // Set<string>, created on first join (idle connections stay small)
    ws.alive = true;
    ws.tokens = RATE_LIMIT;
    ws.refilled = performance.now();
    conns.set(key, ws);
    ws.on('error', () => {});
    ws.on('pong', onPong);
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.send('{"type":"welcome","worker":' + slot + ',"id":"' + ws.cid + '"}');
  });

  function onPong() {
    this.alive = true;
  }

  // Heartbeat, as the ws README recommends: a client that did not answer the last ping is dropped.
  const heartbeat = setInterval(() => {
    for (const ws of wssRooms.clients) {
      if (!ws.alive) {
        ws.terminate();
        continue;
      }
      ws.alive = false;
      ws.ping();
    }
  }, PING_INTERVAL_MS);
  heartbeat.unref();

  // The error frame carries the request's "id" when it had one (as wsfleet's does).
  function sendError(ws, code, message, idJson) {
    const head = '{"type":"error","code":"' + code + '","message":' + JSON.stringify(message);
    ws.send(idJson === undefined ? head + '}' : head + ',"id":' + idJson + '}');
  }

  // Token bucket: RATE_LIMIT requests per second, bursts of RATE_LIMIT.
  function allow(ws) {
    if (RATE_LIMIT === 0) return true;
    const now = performance.now();
    ws.tokens = Math.min(RATE_LIMIT, ws.tokens + ((now - ws.refilled) / 1000) * RATE_LIMIT);
    ws.refilled = now;
    if (ws.tokens < 1) return false;
    ws.tokens -= 1;
    return true;
  }

  function validRoom(r) {
    if (r.length === 0 || Buffer.byteLength(r, 'utf8') > MAX_ROOM_BYTES) return false;
    // eslint-disable-next-line no-control-regex
    return !/[\u0000-\u001f\u007f-\u009f]/.test(r);
  }

  function onMessage(data, isBinary) {
    const ws = this;
    ws.alive = true;
    let msg;
    let parsed = false;
    if (!isBinary) {
      try {
        msg = JSON.parse(data.toString('utf8'));
        parsed = true;
      } catch (e) {
        // reported below, after the rate limit
      }
    }
    const isObject = parsed && msg !== null && typeof msg === 'object' && !Array.isArray(msg);
    const idJson = isObject && msg.id !== undefined ? JSON.stringify(msg.id) : undefined;
    if (!allow(ws)) return sendError(ws, 'rate_limited', `more than ${RATE_LIMIT} requests per second; slow down`, idJson);
    if (isBinary) return sendError(ws, 'bad_json', 'binary frames are not part of the /ws protocol; send JSON text frames');
    if (!parsed) return sendError(ws, 'bad_json', 'request is not valid JSON');
    if (!isObject) return sendError(ws, 'bad_json', 'a request must be a JSON object like {"type":"join","room":"general"}');
    const type = msg.type;
    if (type === undefined) return sendError(ws, 'missing_field', 'missing "type" (join, leave, publish or broadcast)', idJson);
    if (typeof type !== 'string') return sendError(ws, 'invalid_field', '"type" must be a string', idJson);

    if (type === 'broadcast') {
      if (msg.data === undefined) return sendError(ws, 'missing_field', 'missing "data" (any JSON value)', idJson);
      process.send({ t: 'b', d: JSON.stringify(msg.data), c: ws.key, a: idJson });
      return;
    }
    if (type !== 'join' && type !== 'leave' && type !== 'publish') {
      return sendError(ws, 'unknown_type', `unknown request type ${JSON.stringify(type.slice(0, 64))}; use join, leave, publish or broadcast`, idJson);
    }
    const room = msg.room;
    if (room === undefined) return sendError(ws, 'missing_field', 'missing "room" (a string)', idJson);
    if (typeof room !== 'string') return sendError(ws, 'invalid_field', '"room" must be a string', idJson);
    if (!validRoom(room)) return sendError(ws, 'bad_room', 'a room name is 1 to 128 bytes of UTF-8 without control characters', idJson);

    if (type === 'publish') {
      if (msg.data === undefined) return sendError(ws, 'missing_field', 'missing "data" (any JSON value)', idJson);
      process.send({ t: 'p', r: room, d: JSON.stringify(msg.data), c: ws.key, a: idJson });
    } else if (type === 'join') {
      join(ws, room, idJson);
    } else {
      leave(ws, room, true);
      replyDone(ws, '{"type":"left","room":' + JSON.stringify(room) + '}', idJson);
    }
  }

  function replyDone(ws, frame, idJson) {
    if (ws.readyState !== OPEN) return;
    ws.send(frame);
    if (idJson !== undefined) ws.send('{"type":"ack","id":' + idJson + '}');
  }

  function join(ws, room, idJson) {
    const joined = '{"type":"joined","room":' + JSON.stringify(room) + '}';
    if (ws.rooms !== null && ws.rooms.has(room)) return replyDone(ws, joined, idJson); // already a member
    if (ws.rooms === null) ws.rooms = new Set();
    if (ws.rooms.size >= MAX_ROOMS_PER_CONN) {
      return sendError(ws, 'too_many_rooms', `a connection may be in at most ${MAX_ROOMS_PER_CONN} rooms; leave one first`, idJson);
    }
    ws.rooms.add(room);
    let r = rooms.get(room);
    if (r === undefined) {
      // First local member: register interest with the primary; the join completes when the
      // primary confirms, so a publish ordered after "joined" is guaranteed to reach us.
      r = { members: new Set(), ready: false, n: ++interestSeq, pending: [] };
      rooms.set(room, r);
      process.send({ t: 'i', r: room, on: true, n: r.n });
    }
    r.members.add(ws);
    process.send({ t: 'pr', r: room, e: 'join', c: ws.key, id: ws.cid });
    if (r.ready) replyDone(ws, joined, idJson);
    else r.pending.push([ws, joined, idJson]);
  }

  // Removes ws from room; `presence` is false only when the whole worker is going away.
  function leave(ws, room, presence) {
    if (ws.rooms === null || !ws.rooms.delete(room)) return;
    const r = rooms.get(room);
    if (r === undefined) return;
    if (!r.ready && r.pending.length > 0) {
      // Left before the primary confirmed the join: answer the join first, in order.
      r.pending = r.pending.filter(([w, joined, idJson]) => {
        if (w !== ws) return true;
        if (presence) replyDone(w, joined, idJson);
        return false;
      });
    }
    r.members.delete(ws);
    if (presence) process.send({ t: 'pr', r: room, e: 'leave', c: ws.key, id: ws.cid });
    if (r.members.size === 0) {
      rooms.delete(room);
      process.send({ t: 'i', r: room, on: false });
    }
  }

  function onClose() {
    const ws = this;
    conns.delete(ws.key);
    if (ws.rooms !== null && process.connected) {
      for (const room of Array.from(ws.rooms)) leave(ws, room, true);
    }
  }

  // Fan-out writes. ws.send() writes each frame with its own writev() syscall; a worker that
  // relays a burst of room frames would make one syscall per frame per member. So each
  // recipient's socket (the net.Socket we handed to handleUpgrade) is corked on its first
  // delivery in this turn of the event loop and uncorked in setImmediate: everything queued
  // to it meanwhile leaves in one writev(), the batching wsfleet's outbox does. Measured on
  // the shared 2-core box, 1,900 subscribers at --rate max, three runs: ~150k -> 510k-920k
  // deliveries/s and 7-7.7 -> 1.2-1.4 µs server CPU per delivery. PEER_CORK=0 turns it off.
  const corked = [];
  let flushScheduled = false;
  function flushCorked() {
    flushScheduled = false;
    for (let i = 0; i < corked.length; i++) {
      corked[i].uncork();
      corked[i].peerCorked = false;
    }
    corked.length = 0;
  }

  function deliver(ws, buf) {
    if (ws.readyState !== OPEN) return;
    if (ws.bufferedAmount > OUTBOX_LIMIT) {
      ws.close(1013, 'slow consumer');
      return;
    }
    if (CORK) {
      const sock = ws.sock;
      if (!sock.peerCorked) {
        sock.cork();
        sock.peerCorked = true;
        corked.push(sock);
        if (!flushScheduled) {
          flushScheduled = true;
          setImmediate(flushCorked);
        }
      }
    }
    ws.send(buf, TEXT);
  }

  process.on('message', (m) => {
    switch (m.t) {
      case 'm': { // a room frame: encode once, hand the same Buffer to every local member
        const r = rooms.get(m.r);
        if (r === undefined) return;
        const buf = Buffer.from(m.f, 'utf8');
        if (m.s === undefined) {
          for (const ws of r.members) deliver(ws, buf);
        } else {
          for (const ws of r.members) if (ws.key !== m.s) deliver(ws, buf);
        }
        return;
      }
      case 'bc': {
        const buf = Buffer.from(m.f, 'utf8');
        for (const ws of wssRooms.clients) deliver(ws, buf);
        return;
      }
      case 'o': {
        const ws = conns.get(m.c);
        if (ws !== undefined && ws.readyState === OPEN) ws.send(m.f);
        return;
      }
      case 'ia': {
        const r = rooms.get(m.r);
        if (r === undefined || r.n !== m.n || r.ready) return; // answer to an older request
        r.ready = true;
        for (const [ws, joined, idJson] of r.pending) if (ws.rooms !== null && ws.rooms.has(m.r)) replyDone(ws, joined, idJson);
        r.pending = [];
        return;
      }
      case 'stop':
        drain();
        return;
      default:
        process.stderr.write(`peer worker ${slot}: unknown message ${JSON.stringify(m)}\n`);
    }
  });

  // Drain: stop accepting (503 on /health and upgrades), close clients with 1012, exit.
  function drain() {
    if (draining) return;
    draining = true;
    server.close();
    for (const ws of wssRooms.clients) ws.close(1012, 'service restart');
    const deadline = setTimeout(() => process.exit(0), DRAIN_GRACE_MS);
    deadline.unref();
    const check = setInterval(() => {
      if (wssRooms.clients.size === 0) process.exit(0);
    }, 50);
    check.unref();
  }
  process.on('SIGTERM', drain);
  process.on('SIGINT', drain);
  // The primary is gone (killed with SIGKILL, say): do not linger as an orphan.
  process.on('disconnect', () => process.exit(0));

  server.listen(port, host);
}

function pathOf(url) {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}
