//! The allocator's settings for a long-running server.
//!
//! One Argon2id password check allocates a 19 MiB work area and frees it
//! again. glibc's allocator serves the first such block with `mmap` and
//! unmaps it when freed, but then raises its mmap threshold (and its trim
//! threshold, twice that) to the block's size, so every later check carves
//! the block out of a thread's heap, where it stays resident once freed:
//! the broker kept 20 to 40 MiB after the first logins, more than ten
//! thousand idle MQTT connections take (docs/benchmarks.md). Fixed
//! thresholds keep large blocks in their own mappings, returned when freed,
//! and bound the free memory a heap keeps at its top.

/// Allocations at least this large get their own mapping.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;
/// Free memory at the top of a heap beyond this goes back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 8 << 20;

/// Fixes glibc's mmap and trim thresholds (see the module's docs); a no-op
/// with other C libraries. Call it once, first thing in `main`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters, takes no
    // pointers and locks the allocator while it does.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_blocks_still_allocate_after_tuning() {
        super::tune_allocator();
        let big = vec![1u8; 32 << 20];
        assert_eq!(big.iter().map(|&b| usize::from(b)).sum::<usize>(), 32 << 20);
    }
}
