//! What wsfleet keeps in Redis and the server-side scripts that touch it: key names, the
//! publish script (order, store and fan out in one round trip), the read script (a room's
//! position and the stored messages after a point, read atomically), the history script (a
//! `history` request's page) and the pub/sub payload.
//!
//! Per room `R` (the `{R}` hash tag keeps a room's keys on one cluster slot):
//! - `wsf:{R}:m` — a hash: `seq` (the room's last sequence number) and `epoch`;
//! - `wsf:{R}:l` — a stream of the last messages, entry id `SEQ-1`, field `d` = data;
//! - `wsf:{R}:c` — the pub/sub channel, payload `SEQ EPOCH DATA`.
//!
//! Both keys expire together `ttl` seconds after the room's last publish. When they are
//! gone (expired, or Redis restarted empty) the next publish starts the room at `seq` 1
//! with a new epoch, so a client's old position is refused, never misread.

/// Orders, stores and fans out one publish. KEYS: meta, log, channel. ARGV: a fresh epoch
/// (used when the room starts anew: its hash had no epoch), data, log cap, TTL in seconds. Returns `{seq, epoch}`.
pub const PUBLISH: &str = r"
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], seq .. '-1', 'd', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', KEYS[3], seq .. ' ' .. epoch .. ' ' .. ARGV[2])
return {seq, epoch}
";

/// The start of the read and history scripts: `m` = the room's `{seq, epoch}`; a room
/// Redis does not know (expired, or Redis lost its data) is started at `seq` 0 with the
/// fresh epoch `ARGV[2]`, living `ARGV[3]` seconds.
macro_rules! start_room {
    () => {
        r"
local m = redis.call('HMGET', KEYS[1], 'seq', 'epoch')
if not m[2] then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'seq', 0, 'epoch', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  m = {0, ARGV[2]}
end
"
    };
}

/// A room's position and the messages stored after `ARGV[1]` (none when it is -1; all of
/// them when the room's epoch is not `ARGV[4]`, the one the host knew, so a host whose
/// room started anew gets its new life from the start). KEYS: meta, log. ARGV: after, a
/// fresh epoch, TTL in seconds, the known epoch ('' if none). A room Redis does not know is
/// started at `seq` 0 with the fresh epoch, so every member anywhere has a position to
/// recover from. Returns `{seq, epoch, entries}`.
pub const READ: &str = concat!(
    start_room!(),
    r"
local after = tonumber(ARGV[1])
if ARGV[4] ~= '' and ARGV[4] ~= m[2] then after = 0 end
local entries = {}
if after >= 0 then
  entries = redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+')
end
return {tonumber(m[1]), m[2], entries}
"
);

/// A `history` request's page, with the semantics of `history::query` (forward from the
/// oldest or after `since`, or `reverse` from the newest or before `since`, at most `limit`
/// messages, none older than the room's last `size`). KEYS: meta, log. ARGV: limit, a
/// fresh epoch, TTL in seconds, size, since epoch ('' for none), since seq, reverse ('1'
/// or '0'). A room Redis does not know is started at `seq` 0 with the fresh epoch, as the
/// read script does, so a position from before Redis lost its data is refused.
/// Returns `{status, top, epoch, entries}`, status `ok`, `epoch_changed` or `beyond_top`.
pub const HISTORY: &str = concat!(
    start_room!(),
    r"
local top = tonumber(m[1])
local from = math.max(top - tonumber(ARGV[4]), 0) + 1
local to = top
local reverse = ARGV[7] == '1'
if ARGV[5] ~= '' then
  if ARGV[5] ~= m[2] then return {'epoch_changed', top, m[2], {}} end
  local since = tonumber(ARGV[6])
  if since > top then return {'beyond_top', top, m[2], {}} end
  if reverse then to = since - 1 else from = math.max(from, since + 1) end
end
local limit = tonumber(ARGV[1])
local entries = {}
if limit > 0 and from <= to then
  if reverse then
    entries = redis.call('XREVRANGE', KEYS[2], to .. '-1', from .. '-0', 'COUNT', limit)
  else
    entries = redis.call('XRANGE', KEYS[2], from .. '-0', to .. '-1', 'COUNT', limit)
  end
end
return {'ok', top, m[2], entries}
"
);

/// The channel every host subscribes to on the first instance for `broadcast`.
pub const BROADCAST_CHANNEL: &str = "wsf:broadcast";

/// The hash of `room`'s position.
pub fn meta_key(room: &str) -> String {
    format!("wsf:{{{room}}}:m")
}

/// The stream of `room`'s stored messages.
pub fn log_key(room: &str) -> String {
    format!("wsf:{{{room}}}:l")
}

/// The pub/sub channel of `room`.
pub fn channel(room: &str) -> String {
    format!("wsf:{{{room}}}:c")
}

/// The room a channel name belongs to (`None` for channels wsfleet does not use).
pub fn room_of(channel: &str) -> Option<&str> {
    channel.strip_prefix("wsf:{")?.strip_suffix("}:c")
}

/// A message as the publish script sends it on a room's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The room's order.
    pub seq: u64,
    /// The room's epoch when it was ordered.
    pub epoch: String,
    /// The raw JSON data.
    pub data: String,
}

/// Reads a channel payload `SEQ EPOCH DATA` (data may hold spaces and newlines).
pub fn parse_delivery(payload: &str) -> Option<Delivery> {
    let mut parts = payload.splitn(3, ' ');
    let seq = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.to_owned();
    let data = parts.next()?.to_owned();
    Some(Delivery { seq, epoch, data })
}

/// A presence notice as hosts send it on a room's channel: `p HOST 1|0 ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The host of the member (it delivered the notice to its own members already).
    pub host: String,
    /// Joined (true) or left.
    pub joined: bool,
    /// The presence frame the member's host sent its own members (with the member's id,
    /// and its user and info when it has a token).
    pub frame: String,
}

/// The channel payload of a presence notice.
pub fn notice_payload(host: &str, joined: bool, frame: &str) -> String {
    format!("p {host} {} {frame}", u8::from(joined))
}

/// Reads a presence notice payload.
pub fn parse_notice(payload: &str) -> Option<Notice> {
    let mut parts = payload.strip_prefix("p ")?.splitn(3, ' ');
    let host = parts.next()?.to_owned();
    let joined = match parts.next()? {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let frame = parts.next()?.to_owned();
    Some(Notice {
        host,
        joined,
        frame,
    })
}

/// The `seq` of a stream entry id `SEQ-1`.
pub fn seq_of_entry(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip_and_payloads_keep_spaces_in_data() {
        assert_eq!(room_of(&channel("a b}:c")), Some("a b}:c"));
        assert_eq!(room_of(BROADCAST_CHANNEL), None);
        let d = parse_delivery("12 ab12 {\"x\": \"a b\"}").unwrap();
        assert_eq!(
            (d.seq, d.epoch.as_str(), d.data.as_str()),
            (12, "ab12", "{\"x\": \"a b\"}")
        );
        assert_eq!(parse_delivery("x ab 1"), None);
        assert_eq!(parse_delivery("1 ab"), None);
        assert_eq!(seq_of_entry("42-1"), Some(42));
        let n = parse_notice(&notice_payload("h1", true, "s0 7")).unwrap();
        assert_eq!(
            (n.host.as_str(), n.joined, n.frame.as_str()),
            ("h1", true, "s0 7")
        );
        assert_eq!(parse_delivery(&notice_payload("h1", false, "x")), None);
        assert_eq!(meta_key("r"), "wsf:{r}:m");
    }
}
