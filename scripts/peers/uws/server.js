#!/usr/bin/env node
'use strict';
// The uWebSockets peer for `scripts/bench.sh`: uWS.js 20.57 (the C++ uWebSockets server and
// its built-in pub/sub, republished on npm as @btc-vision/uwebsockets.js with prebuilt
// binaries and no install script) speaking the wsfleet client protocol (README, "The client
// protocol"), so `wsfleet bench` drives it unchanged:
//   /ws     welcome, join/joined, leave/left, publish -> message with a per-room seq, ack,
//           broadcast, presence, error frames
//   /echo   echo of every text/binary message
//   GET /health  200
//
// Threads: one uWS App per worker thread (`--workers N`, default: the CPU count), fed by an
// acceptor App on the main thread that owns the listening socket and hands each accepted
// connection to the next thread (addChildAppDescriptor: uWS.js's own multi-threading
// pattern). Every thread listening itself with SO_REUSEPORT, as wsfleet's workers do, is not
// possible: this uSockets build does not set SO_REUSEPORT on Linux (a second listen on the
// port fails with EADDRINUSE). The acceptor does only accept + hand-off, so the threads do
// all the WebSocket work, like wsfleet's workers. `--workers 1`: one App on the main thread
// that listens itself (plain single-threaded uWS.js, no acceptor and no forwarding).
//
// Rooms across threads: a room's members may sit on any thread, and uWS's pub/sub is per
// App, so every room has an owner thread (a hash of its name). The owner assigns the room's
// `seq`, publishes the frame to its own subscribers with app.publish() (uWS builds the frame
// once and batches it per socket), and forwards the frame to the other threads, which
// app.publish() it to theirs. A publish arriving on another thread is first posted to the
// owner. Thread-to-thread traffic goes over direct MessagePorts, batched per event-loop turn
// (one postMessage per destination per turn). So each room has one order, every member sees
// it, and one publisher's messages stay in its order (one FIFO port per thread pair) -- the
// guarantees wsfleet gives -- at the cost of one hop for rooms spread over threads, as
// wsfleet pays its master hop. This is the fair shape: a single-threaded uWS would use one
// core of two; threads without forwarding would lose every message between members on
// different threads.
//
// Presence: join/leave notices to the other members, as wsfleet sends them (ws.publish() on
// the subject's thread excludes the subject; other threads get the frame forwarded).
// PEER_PRESENCE=0 turns them off (what a uWS app built for 20,000-viewer rooms would do).
// Limits follow wsfleet's defaults: 64 KiB messages, 64 rooms per connection, 1,000 requests/s
// per connection (token bucket; PEER_RATE_LIMIT_PER_SEC, 0 = off), 1 MiB of backpressure
// before the connection is closed (PEER_OUTBOX_LIMIT_BYTES).
//
// Usage: node server.js [--port P] [--host H] [--workers N]
// Prints `peer ready listen=HOST:PORT workers=N` once every thread listens. SIGTERM/SIGINT
// exit. SIGHUP is ignored (no rolling restart here).

const { Worker, isMainThread, parentPort, workerData, MessageChannel } = require('node:worker_threads');
const os = require('node:os');

const MAX_PAYLOAD = 64 * 1024;
const MAX_ROOMS_PER_CONN = 64;
const MAX_ROOM_BYTES = 128;
const OUTBOX_LIMIT = Number(process.env.PEER_OUTBOX_LIMIT_BYTES || 1024 * 1024);
const RATE_LIMIT = Number(process.env.PEER_RATE_LIMIT_PER_SEC ?? 1000);
const PRESENCE = process.env.PEER_PRESENCE !== '0';

if (isMainThread) main();
else serve(workerData, (m) => parentPort.postMessage(m));

function parseArgs(argv) {
  const o = { port: process.env.PEER_PORT || '0', host: process.env.PEER_HOST || '127.0.0.1', workers: process.env.PEER_WORKERS || '' };
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
      process.stderr.write(`uws peer: unknown argument ${a}\n`);
      process.exit(2);
    }
  }
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const workers = o.workers === '' ? cpus : Number(o.workers);
  const port = Number(o.port);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
    process.stderr.write(`uws peer: bad --workers ${o.workers} (1 to 64)\n`);
    process.exit(2);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`uws peer: bad --port ${o.port}\n`);
    process.exit(2);
  }
  return { port, host: o.host, workers };
}

function main() {
  const { port, host, workers: n } = parseArgs(process.argv.slice(2));
  // ports[i][j]: thread i's end of the channel to thread j.
  const ports = Array.from({ length: n }, () => new Array(n).fill(null));
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const ch = new MessageChannel();
      ports[i][j] = ch.port1;
      ports[j][i] = ch.port2;
    }
  }
  if (n === 1) {
    // One thread: the App runs here and listens itself (no acceptor, no forwarding).
    serve({ slot: 0, n: 1, peers: [null], listen: { host, port } }, (m) => {
      if (m.port < 0) {
        process.stderr.write(`uws peer: cannot listen on ${host}:${port}\n`);
        process.exit(1);
      }
      process.stdout.write(`peer ready listen=${host}:${m.port} workers=1\n`);
    });
  } else startThreads(host, port, n, ports);
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
  process.on('SIGHUP', () => process.stderr.write('uws peer: SIGHUP ignored (no rolling restart)\n'));
}

function startThreads(host, port, n, ports) {
  // The acceptor: accepts on the one listening socket and hands each new connection to the
  // next thread's App (uWS's own round-robin, addChildAppDescriptor).
  const uWS = require('@btc-vision/uwebsockets.js');
  const acceptor = uWS.App();
  let added = 0;
  for (let slot = 0; slot < n; slot++) {
    const peers = ports[slot];
    const transfer = peers.filter((p) => p !== null);
    const w = new Worker(__filename, { workerData: { slot, n, peers, listen: null }, transferList: transfer });
    w.on('error', (e) => {
      process.stderr.write(`uws peer: thread ${slot} failed: ${e && e.stack ? e.stack : e}\n`);
      process.exit(1);
    });
    w.on('exit', (code) => {
      process.stderr.write(`uws peer: thread ${slot} exited (${code})\n`);
      process.exit(1);
    });
    w.on('message', (m) => {
      if (m.t !== 'descriptor') return;
      acceptor.addChildAppDescriptor(m.d);
      added += 1;
      if (added < n) return;
      acceptor.listen(host, port, (ls) => {
        if (!ls) {
          process.stderr.write(`uws peer: cannot listen on ${host}:${port}\n`);
          process.exit(1);
        }
        process.stdout.write(`peer ready listen=${host}:${uWS.us_socket_local_port(ls)} workers=${n}\n`);
      });
    });
  }
}

// One App: `cfg` = { slot, n, peers (MessagePort per other thread), listen ({host, port} or
// null when an acceptor feeds it) }; `tell` reports `listening` / `descriptor` to main().
function serve(cfg, tell) {
  const uWS = require('@btc-vision/uwebsockets.js');
  const { slot, n, peers, listen } = cfg;
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  let nextConn = 1;
  const seqs = new Map(); // room -> last seq (rooms this thread owns)
  const waiting = new Map(); // conn key -> ws, for acks of publishes ordered on another thread
  const clients = new Set(); // every /ws client, for broadcast
  const outq = peers.map(() => []); // per destination thread: messages of this turn
  let flushScheduled = false;

  function owner(room) {
    let h = 2166136261;
    for (let i = 0; i < room.length; i++) h = Math.imul(h ^ room.charCodeAt(i), 16777619);
    return (h >>> 0) % n;
  }

  function post(dest, m) {
    outq[dest].push(m);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
  }
  function flush() {
    flushScheduled = false;
    for (let d = 0; d < n; d++) {
      if (outq[d].length > 0) {
        peers[d].postMessage(outq[d]);
        outq[d] = [];
      }
    }
  }
  function toOthers(m) {
    for (let d = 0; d < n; d++) if (d !== slot) post(d, m);
  }

  const app = uWS.App();

  // The owner orders a publish: next seq, local subscribers, the other threads, the ack.
  function order(room, data, ackTo) {
    const seq = (seqs.get(room) || 0) + 1;
    seqs.set(room, seq);
    const frame = '{"type":"message","room":' + JSON.stringify(room) + ',"seq":' + seq + ',"data":' + data + '}';
    app.publish(room, frame);
    toOthers({ k: 'f', r: room, f: frame });
    return seq;
  }

  function onPeer(batch) {
    for (const m of batch) {
      switch (m.k) {
        case 'p': { // a publish for a room this thread owns
          const seq = order(m.r, m.d);
          if (m.a !== undefined) post(m.o, { k: 'a', c: m.c, f: '{"type":"ack","id":' + m.a + ',"seq":' + seq + '}' });
          break;
        }
        case 'f':
          app.publish(m.r, m.f);
          break;
        case 'b':
          for (const ws of clients) ws.send(m.f);
          break;
        case 'a': {
          const ws = waiting.get(m.c);
          if (ws !== undefined) ws.cork(() => ws.send(m.f));
          break;
        }
        default:
          process.stderr.write(`uws peer thread ${slot}: unknown message ${JSON.stringify(m)}\n`);
      }
    }
  }
  for (let d = 0; d < n; d++) if (peers[d] !== null) peers[d].on('message', onPeer);

  function sendError(ws, code, message, idJson) {
    const head = '{"type":"error","code":"' + code + '","message":' + JSON.stringify(message);
    ws.send(idJson === undefined ? head + '}' : head + ',"id":' + idJson + '}');
  }

  function allow(u) {
    if (RATE_LIMIT === 0) return true;
    const now = performance.now();
    u.tokens = Math.min(RATE_LIMIT, u.tokens + ((now - u.refilled) / 1000) * RATE_LIMIT);
    u.refilled = now;
    if (u.tokens < 1) return false;
    u.tokens -= 1;
    return true;
  }

  function validRoom(r) {
    if (r.length === 0 || enc.encode(r).length > MAX_ROOM_BYTES) return false;
    // eslint-disable-next-line no-control-regex
    return !/[\u0000-\u001f\u007f-\u009f]/.test(r);
  }

  function presence(ws, room, event, u) {
    if (!PRESENCE) return;
    const frame = '{"type":"presence","room":' + JSON.stringify(room) + ',"event":"' + event + '","id":"' + u.cid + '"}';
    if (ws !== null) ws.publish(room, frame); // the other local members, not the subject
    else app.publish(room, frame); // the subject is gone already
    toOthers({ k: 'f', r: room, f: frame });
  }

  function onMessage(ws, buf, isBinary) {
    const u = ws.getUserData();
    let msg;
    let parsed = false;
    if (!isBinary) {
      try {
        msg = JSON.parse(dec.decode(buf));
        parsed = true;
      } catch (e) {
        // reported below, after the rate limit
      }
    }
    const isObject = parsed && msg !== null && typeof msg === 'object' && !Array.isArray(msg);
    const idJson = isObject && msg.id !== undefined ? JSON.stringify(msg.id) : undefined;
    if (!allow(u)) return sendError(ws, 'rate_limited', `more than ${RATE_LIMIT} requests per second; slow down`, idJson);
    if (isBinary) return sendError(ws, 'bad_json', 'binary frames are not part of the /ws protocol; send JSON text frames');
    if (!parsed) return sendError(ws, 'bad_json', 'request is not valid JSON');
    if (!isObject) return sendError(ws, 'bad_json', 'a request must be a JSON object like {"type":"join","room":"general"}');
    const type = msg.type;
    if (type === undefined) return sendError(ws, 'missing_field', 'missing "type" (join, leave, publish or broadcast)', idJson);
    if (typeof type !== 'string') return sendError(ws, 'invalid_field', '"type" must be a string', idJson);
    if (type === 'broadcast') {
      if (msg.data === undefined) return sendError(ws, 'missing_field', 'missing "data" (any JSON value)', idJson);
      const frame = '{"type":"message","data":' + JSON.stringify(msg.data) + '}';
      for (const c of clients) c.send(frame);
      toOthers({ k: 'b', f: frame });
      if (idJson !== undefined) ws.send('{"type":"ack","id":' + idJson + '}');
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
      const data = JSON.stringify(msg.data);
      const o = owner(room);
      if (o === slot) {
        const seq = order(room, data);
        if (idJson !== undefined) ws.send('{"type":"ack","id":' + idJson + ',"seq":' + seq + '}');
      } else {
        if (idJson !== undefined) waiting.set(u.key, ws);
        post(o, { k: 'p', r: room, d: data, o: slot, c: u.key, a: idJson });
      }
    } else if (type === 'join') {
      if (u.rooms === null) u.rooms = new Set();
      if (!u.rooms.has(room)) {
        if (u.rooms.size >= MAX_ROOMS_PER_CONN) {
          return sendError(ws, 'too_many_rooms', `a connection may be in at most ${MAX_ROOMS_PER_CONN} rooms; leave one first`, idJson);
        }
        u.rooms.add(room);
        ws.subscribe(room);
        presence(ws, room, 'join', u);
      }
      ws.send('{"type":"joined","room":' + JSON.stringify(room) + '}');
      if (idJson !== undefined) ws.send('{"type":"ack","id":' + idJson + '}');
    } else {
      if (u.rooms !== null && u.rooms.delete(room)) {
        ws.unsubscribe(room);
        presence(ws, room, 'leave', u);
      }
      ws.send('{"type":"left","room":' + JSON.stringify(room) + '}');
      if (idJson !== undefined) ws.send('{"type":"ack","id":' + idJson + '}');
    }
  }

  const common = {
    compression: uWS.DISABLED,
    maxPayloadLength: MAX_PAYLOAD,
    maxBackpressure: OUTBOX_LIMIT,
    closeOnBackpressureLimit: true,
    idleTimeout: 120,
    sendPingsAutomatically: true,
  };
  app.ws('/ws', {
    ...common,
    upgrade: (res, req, context) => {
      // uWS aborts the process when a handler returns without responding and without an
      // abort handler; a client that gives up mid-handshake must not take the server down.
      res.onAborted(() => {});
      const key = nextConn++;
      res.upgrade(
        { key, cid: slot + '.1.' + key, rooms: null, tokens: RATE_LIMIT, refilled: performance.now() },
        req.getHeader('sec-websocket-key'),
        req.getHeader('sec-websocket-protocol'),
        req.getHeader('sec-websocket-extensions'),
        context,
      );
    },
    open: (ws) => {
      const u = ws.getUserData();
      clients.add(ws);
      ws.send('{"type":"welcome","worker":' + slot + ',"id":"' + u.cid + '"}');
    },
    message: onMessage,
    close: (ws) => {
      const u = ws.getUserData();
      clients.delete(ws);
      waiting.delete(u.key);
      if (u.rooms !== null) for (const room of u.rooms) presence(null, room, 'leave', u);
    },
  });
  app.ws('/echo', {
    ...common,
    message: (ws, buf, isBinary) => {
      ws.send(buf, isBinary);
    },
  });
  app.get('/health', (res) => {
    res.writeHeader('content-type', 'text/plain').end('ok\n');
  });
  app.any('/*', (res) => {
    res.writeStatus('404 Not Found').end('not found\n');
  });
  if (listen !== null) {
    // --workers 1: this one thread listens itself (no acceptor hop).
    app.listen(listen.host, listen.port, (ls) => {
      tell({ t: 'listening', port: ls ? uWS.us_socket_local_port(ls) : -1 });
    });
    return;
  }
  // No listen here: the main thread's acceptor hands this App its connections.
  tell({ t: 'descriptor', d: app.getDescriptor() });
}
