//! Which Redis instance owns a room: a stable hash of the room name over the configured
//! instances, so every host sends a room's publishes and subscriptions to the same one and
//! the room's order lives in one place.

/// The instance (index into the `--redis` list) that owns `room` among `instances`.
///
/// FNV-1a over the name's bytes: stable across processes, builds and hosts (unlike
/// `std`'s randomly keyed hasher), cheap, and spread well enough for room names.
pub fn shard(room: &str, instances: usize) -> usize {
    if instances <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % instances as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_room_always_lands_on_the_same_instance() {
        assert_eq!(shard("lobby", 1), 0);
        // Fixed values: a change here would split running fleets' rooms across instances.
        assert_eq!(shard("", 2), (0xcbf2_9ce4_8422_2325u64 % 2) as usize);
        let a: Vec<usize> = (0..20).map(|i| shard(&format!("room-{i}"), 3)).collect();
        let b: Vec<usize> = (0..20).map(|i| shard(&format!("room-{i}"), 3)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn rooms_spread_over_every_instance() {
        let mut counts = [0usize; 2];
        for i in 0..1000 {
            counts[shard(&format!("room-{i}"), 2)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 400), "{counts:?}");
    }
}
