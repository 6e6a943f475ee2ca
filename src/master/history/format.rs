//! The `history.bin` format: encoding the store to bytes and decoding it back, with every
//! length checked against what is left before anything is allocated.
//!
//! ```text
//! header  magic "WSFHIST\n" (8) | version u32 | body length u64 | CRC32 of body u32
//! body    saved_at unix ms u64 | rooms u32 | rooms…
//! room    name len u16 | name | epoch len u8 | epoch | top u64 | last loss u8
//!         | messages u32 | messages… (consecutive seqs ending at top, oldest first)
//! message stored_at unix ms u64 | data len u32 | data (UTF-8 JSON text)
//! ```
//! All integers little-endian. Stored times are wall-clock, so the next master (another
//! process, another monotonic clock origin) can apply the TTL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::stream::Cause;

/// First bytes of the file.
pub const MAGIC: &[u8; 8] = b"WSFHIST\n";
/// Bumped on any change of the layout; other versions are set aside, not guessed at.
pub const VERSION: u32 = 1;
/// Magic, version, body length, checksum.
pub const HEADER_BYTES: usize = 8 + 4 + 8 + 4;
/// Longest room name accepted.
const MAX_ROOM_BYTES: usize = wsfleet_worker::protocol::MAX_ROOM_BYTES;
/// Smallest encoding of a message (times and length, empty data).
const MIN_MESSAGE_BYTES: usize = 8 + 4;

/// One room as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRoom {
    /// Room name.
    pub name: String,
    /// Epoch text.
    pub epoch: String,
    /// Last `seq`.
    pub top: u64,
    /// Cause of the newest lost message.
    pub last_loss: Option<Cause>,
    /// `(stored_at, data)`, oldest first, ending at `top`.
    pub messages: Vec<(SystemTime, String)>,
}

/// Why a file is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// Not our file.
    #[error("it does not start with the history file magic")]
    BadMagic,
    /// Written by another format version.
    #[error("it has format version {0}, this wsfleet reads version {VERSION}")]
    Version(u32),
    /// Shorter than its header says.
    #[error("it is truncated ({what})")]
    Truncated {
        /// Where the bytes ran out.
        what: &'static str,
    },
    /// Larger than the limit.
    #[error("it is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The body does not match its checksum.
    #[error("its checksum does not match (the body was altered or partly written)")]
    Checksum,
    /// The checksum matches but a field is impossible.
    #[error("it is malformed: {0}")]
    Malformed(&'static str),
}

/// Encodes `rooms` saved at `saved_at`.
pub fn encode<'a>(saved_at: SystemTime, rooms: impl IntoIterator<Item = RoomRef<'a>>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&unix_ms(saved_at).to_le_bytes());
    let count_at = body.len();
    body.extend_from_slice(&0u32.to_le_bytes());
    let mut count: u32 = 0;
    for room in rooms {
        let (Ok(name_len), Ok(epoch_len), Ok(n)) = (
            u16::try_from(room.name.len()),
            u8::try_from(room.epoch.len()),
            u32::try_from(room.messages.len()),
        ) else {
            continue;
        };
        body.extend_from_slice(&name_len.to_le_bytes());
        body.extend_from_slice(room.name.as_bytes());
        body.push(epoch_len);
        body.extend_from_slice(room.epoch.as_bytes());
        body.extend_from_slice(&room.top.to_le_bytes());
        body.push(cause_byte(room.last_loss));
        body.extend_from_slice(&n.to_le_bytes());
        for (at, data) in room.messages {
            body.extend_from_slice(&unix_ms(at).to_le_bytes());
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(data.as_bytes());
        }
        count += 1;
    }
    body[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A room to encode, borrowed from the store.
#[derive(Debug)]
pub struct RoomRef<'a> {
    /// Room name.
    pub name: &'a str,
    /// Epoch text.
    pub epoch: &'a str,
    /// Last `seq`.
    pub top: u64,
    /// Cause of the newest lost message.
    pub last_loss: Option<Cause>,
    /// `(stored_at, data)`, oldest first.
    pub messages: Vec<(SystemTime, &'a str)>,
}

/// Decodes a whole file.
pub fn decode(bytes: &[u8]) -> Result<Vec<SavedRoom>, Damage> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Damage::BadMagic);
    }
    let mut r = Reader(&bytes[MAGIC.len()..]);
    let version = r.u32("header")?;
    if version != VERSION {
        return Err(Damage::Version(version));
    }
    let body_len = r.u64("header")?;
    let crc = r.u32("header")?;
    if (r.0.len() as u64) < body_len {
        return Err(Damage::Truncated { what: "body" });
    }
    if (r.0.len() as u64) > body_len {
        return Err(Damage::Malformed("bytes after the body"));
    }
    if crc32fast::hash(r.0) != crc {
        return Err(Damage::Checksum);
    }
    let _saved_at = r.u64("body")?;
    let rooms = r.u32("body")? as usize;
    // Every room takes at least 2+1+1+8+1+4 bytes: bound the allocation by what is there.
    let mut out = Vec::with_capacity(rooms.min(r.0.len() / 17));
    for _ in 0..rooms {
        out.push(room(&mut r)?);
    }
    if !r.0.is_empty() {
        return Err(Damage::Malformed("bytes after the last room"));
    }
    Ok(out)
}

fn room(r: &mut Reader<'_>) -> Result<SavedRoom, Damage> {
    let name_len = r.u16("room")? as usize;
    if name_len == 0 || name_len > MAX_ROOM_BYTES {
        return Err(Damage::Malformed("room name length"));
    }
    let name = r.text(name_len, "room name")?;
    let epoch_len = r.u8("epoch")? as usize;
    let epoch = r.text(epoch_len, "epoch")?;
    let top = r.u64("room")?;
    let last_loss = match r.u8("room")? {
        0 => None,
        1 => Some(Cause::Size),
        2 => Some(Cause::Ttl),
        3 => Some(Cause::Budget),
        _ => return Err(Damage::Malformed("loss cause")),
    };
    let n = r.u32("room")? as u64;
    if n > top {
        return Err(Damage::Malformed("more messages than the room's seq"));
    }
    if n as usize > r.0.len() / MIN_MESSAGE_BYTES {
        return Err(Damage::Truncated { what: "messages" });
    }
    let mut messages = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let at = UNIX_EPOCH + Duration::from_millis(r.u64("message")?);
        let len = r.u32("message")? as usize;
        messages.push((at, r.text(len, "message data")?));
    }
    Ok(SavedRoom {
        name,
        epoch,
        top,
        last_loss,
        messages,
    })
}

/// Milliseconds since 1970 (0 for times before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn cause_byte(c: Option<Cause>) -> u8 {
    match c {
        None => 0,
        Some(Cause::Size) => 1,
        Some(Cause::Ttl) => 2,
        Some(Cause::Budget) => 3,
    }
}

/// A cursor over the unread bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Damage> {
        if self.0.len() < n {
            return Err(Damage::Truncated { what });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Damage> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Damage> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Damage> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Damage> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, Damage> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// `n` bytes of UTF-8; `n` is checked against what is left before copying.
    fn text(&mut self, n: usize, what: &'static str) -> Result<String, Damage> {
        let bytes = self.take(n, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Damage::Malformed("text that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        encode(
            at,
            [RoomRef {
                name: "chat:a",
                epoch: "00ff",
                top: 7,
                last_loss: Some(Cause::Ttl),
                messages: vec![(at, "\"x\""), (at, "{\"y\":1}")],
            }],
        )
    }

    #[test]
    fn round_trip() {
        let rooms = decode(&sample()).unwrap();
        assert_eq!(rooms.len(), 1);
        let r = &rooms[0];
        assert_eq!(
            (r.name.as_str(), r.epoch.as_str(), r.top),
            ("chat:a", "00ff", 7)
        );
        assert_eq!(r.last_loss, Some(Cause::Ttl));
        let data: Vec<_> = r.messages.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(data, ["\"x\"", "{\"y\":1}"]);
        assert_eq!(unix_ms(r.messages[0].0), 1_700_000_000_123);
    }

    #[test]
    fn every_kind_of_damage_is_named() {
        let good = sample();
        let mut magic = good.clone();
        magic[0] = b'X';
        assert_eq!(decode(&magic), Err(Damage::BadMagic));
        let mut version = good.clone();
        version[8] = 9;
        assert_eq!(decode(&version), Err(Damage::Version(9)));
        assert_eq!(
            decode(&good[..good.len() - 1]),
            Err(Damage::Truncated { what: "body" })
        );
        assert_eq!(
            decode(&good[..10]),
            Err(Damage::Truncated { what: "header" })
        );
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&flipped), Err(Damage::Checksum));
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(Damage::Malformed(_))));
    }

    /// A file whose checksum is right but whose counts claim billions of entries must be
    /// refused without allocating for them.
    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        let body_with = |rooms: u32, msgs: u32, data_len: u32| {
            let mut b = Vec::new();
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&rooms.to_le_bytes());
            b.extend_from_slice(&1u16.to_le_bytes());
            b.push(b'r');
            b.push(1);
            b.push(b'e');
            b.extend_from_slice(&u64::MAX.to_le_bytes());
            b.push(0);
            b.extend_from_slice(&msgs.to_le_bytes());
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&data_len.to_le_bytes());
            let mut f = MAGIC.to_vec();
            f.extend_from_slice(&VERSION.to_le_bytes());
            f.extend_from_slice(&(b.len() as u64).to_le_bytes());
            f.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
            f.extend_from_slice(&b);
            f
        };
        assert_eq!(
            decode(&body_with(1, u32::MAX, 0)),
            Err(Damage::Truncated { what: "messages" })
        );
        assert_eq!(
            decode(&body_with(1, 1, u32::MAX)),
            Err(Damage::Truncated {
                what: "message data"
            })
        );
        assert!(decode(&body_with(u32::MAX, 1, 0)).is_err());
        let mut huge_body = sample();
        huge_body[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode(&huge_body), Err(Damage::Truncated { what: "body" }));
    }
}
