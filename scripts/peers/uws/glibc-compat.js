#!/usr/bin/env node
'use strict';
// Makes the prebuilt uWS.js binary load on a glibc older than 2.38 (Debian 12 has 2.36).
//
// The binary for this Node (uws_linux_x64_<ABI>.node) was linked against glibc 2.38, whose
// headers turn strtol/strtoul/sscanf calls into their C23 variants __isoc23_strtol,
// __isoc23_strtoul and __isoc23_sscanf (versioned GLIBC_2.38). Those differ from the classic
// functions only in also accepting "0b" binary literals, which uWS never parses. Nothing else
// in the binary needs 2.38. This script rebinds those three imports to the classic functions:
// each one's dynamic-symbol name is pointed at the suffix of its own name ("__isoc23_strtol"
// + 9 = "strtol", already in the string table), and the GLIBC_2.38 version requirement is
// pointed at the "GLIBC_2.2.5" one. No code changes; the original is kept as *.orig.
// It does nothing when the binary already loads, or needs no such fix.
//
// Usage: node glibc-compat.js   (from anywhere; patches this directory's node_modules copy)

const fs = require('node:fs');
const path = require('node:path');

const dir = path.join(__dirname, 'node_modules', '@btc-vision', 'uwebsockets.js');
const file = path.join(dir, `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);

function loads() {
  try {
    process.dlopen({ exports: {} }, file);
    return true;
  } catch (e) {
    if (!/GLIBC_2\.38/.test(String(e))) throw e;
    return false;
  }
}

function elfHash(s) {
  let h = 0;
  for (const c of Buffer.from(s)) {
    h = ((h << 4) + c) >>> 0;
    const g = h & 0xf0000000;
    if (g) h ^= g >>> 24;
    h &= ~g >>> 0;
  }
  return h >>> 0;
}

function patch(buf) {
  if (buf.readUInt32BE(0) !== 0x7f454c46 || buf[4] !== 2 || buf[5] !== 1) throw new Error('not a 64-bit little-endian ELF file');
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const shstrndx = buf.readUInt16LE(0x3e);
  const sec = (i) => {
    const o = shoff + i * shentsize;
    return { name: buf.readUInt32LE(o), type: buf.readUInt32LE(o + 4), offset: Number(buf.readBigUInt64LE(o + 24)), size: Number(buf.readBigUInt64LE(o + 32)) };
  };
  const shstr = sec(shstrndx);
  const byName = {};
  for (let i = 0; i < shnum; i++) {
    const s = sec(i);
    const end = buf.indexOf(0, shstr.offset + s.name);
    byName[buf.toString('latin1', shstr.offset + s.name, end)] = s;
  }
  const dynsym = byName['.dynsym'];
  const dynstr = byName['.dynstr'];
  const verneed = byName['.gnu.version_r'];
  if (!dynsym || !dynstr || !verneed) throw new Error('no .dynsym/.dynstr/.gnu.version_r section');
  const str = (off) => buf.toString('latin1', dynstr.offset + off, buf.indexOf(0, dynstr.offset + off));
  const findStr = (s) => {
    const needle = Buffer.from(s + '\0', 'latin1');
    const at = buf.subarray(dynstr.offset, dynstr.offset + dynstr.size).indexOf(needle);
    if (at < 0) throw new Error(`"${s}" is not in .dynstr`);
    return at;
  };
  const renamed = [];
  for (let o = dynsym.offset; o < dynsym.offset + dynsym.size; o += 24) {
    const name = str(buf.readUInt32LE(o));
    if (name.startsWith('__isoc23_')) {
      buf.writeUInt32LE(buf.readUInt32LE(o) + '__isoc23_'.length, o);
      renamed.push(name);
    }
  }
  const oldName = 'GLIBC_2.38';
  const newName = 'GLIBC_2.2.5';
  const newOff = findStr(newName);
  let repointed = 0;
  for (let vn = verneed.offset; ; ) {
    const cnt = buf.readUInt16LE(vn + 2);
    let aux = vn + buf.readUInt32LE(vn + 8);
    for (let k = 0; k < cnt; k++) {
      if (str(buf.readUInt32LE(aux + 8)) === oldName) {
        buf.writeUInt32LE(elfHash(newName), aux);
        buf.writeUInt32LE(newOff, aux + 8);
        repointed += 1;
      }
      aux += buf.readUInt32LE(aux + 12);
    }
    const next = buf.readUInt32LE(vn + 12);
    if (next === 0) break;
    vn += next;
  }
  return { renamed, repointed };
}

if (!fs.existsSync(file)) {
  process.stderr.write(`glibc-compat: ${file} is missing; run npm install in ${__dirname} first\n`);
  process.exit(1);
}
if (loads()) process.exit(0);
const buf = fs.readFileSync(file);
const { renamed, repointed } = patch(buf);
if (!fs.existsSync(file + '.orig')) fs.copyFileSync(file, file + '.orig');
fs.writeFileSync(file + '.tmp', buf);
fs.renameSync(file + '.tmp', file);
process.stderr.write(`glibc-compat: rebound ${renamed.join(', ')} to the classic functions; ${repointed} GLIBC_2.38 requirement(s) now GLIBC_2.2.5\n`);
if (!loads()) {
  process.stderr.write('glibc-compat: the patched binary still does not load\n');
  process.exit(1);
}
