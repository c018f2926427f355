//! How the engine is set up: the settings it is built from
//! ([`EngineConfig`], made from the daemon's by its caller), and the
//! wasmtime configuration they give: a pooling allocator with room for
//! every live instance, its memories sized so they all fit the address
//! space.

use std::path::PathBuf;

use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::DaemonConfig;

/// What the engine is built from: the part of the daemon's settings it
/// needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Where the compiled-code cache and instances' scratch directories
    /// are kept.
    pub data_dir: PathBuf,
    /// A compiled-code cache shared with other daemons
    /// (`--shared-cache`), read on a miss.
    pub shared_cache: Option<PathBuf>,
    /// Live instances at most (`--max-instances`).
    pub max_instances: u32,
    /// The largest memory one instance may have (`--max-memory`).
    pub max_memory_bytes: u64,
}

impl From<&DaemonConfig> for EngineConfig {
    fn from(config: &DaemonConfig) -> EngineConfig {
        EngineConfig {
            data_dir: config.data_dir.clone(),
            shared_cache: config.shared_cache.clone(),
            max_instances: config.max_instances,
            max_memory_bytes: config.max_memory_bytes,
        }
    }
}

/// Core instances, memories and tables a component may need per live
/// component instance, for sizing the pool.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;
/// Extra pool room beyond `max_instances`: the operator's one-off runs
/// (half of it) and room to spare.
pub(super) const POOL_HEADROOM: u32 = 64;
/// Memory a freed pool slot keeps resident, reset in place for the next
/// instance instead of given back to the kernel and faulted in again (most
/// of what a fresh store per request cost).
const KEEP_RESIDENT: usize = 1 << 20;
/// The same for a slot's tables.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Address space the linear memories of all live instances may take
/// together: the pool reserves it in one piece up front, and in a 47-bit
/// user address space about 40 TiB are free in one piece (measured: a
/// 48 TiB reservation fails), beside the pool's tables and stacks.
const MEMORY_ADDRESS_SPACE: u64 = 32 << 40;
/// wasmtime's guard after each memory when a memory's slot is 4 GiB or
/// more (bounds checks are then elided).
const LARGE_GUARD: u64 = 32 << 20;
/// wasmtime's default reservation for a 32-bit memory.
const DEFAULT_RESERVATION: u64 = 4 << 30;
/// The guard after each memory when slots are smaller (bounds checks are
/// compiled in then, and the guard need not be large).
const SMALL_GUARD: u64 = 64 << 10;
/// Memory mappings one live instance costs (its memories, tables and
/// stack with their guards), as measured with 10,000.
pub const MAPPINGS_PER_INSTANCE: u64 = 6;

/// How large each live instance's memories may be, so that the memories of
/// `config.max_instances` of them fit the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySlots {
    /// Largest memory of one instance (all its memories together are
    /// also capped by its service's limit).
    pub max_memory_bytes: u64,
    /// Guard after each memory.
    pub guard_bytes: u64,
}

impl MemorySlots {
    /// Sizes the pool's memory slots for `config`.
    pub fn for_config(config: &EngineConfig) -> MemorySlots {
        let memories =
            u64::from(config.max_instances + POOL_HEADROOM) * u64::from(MEMORIES_PER_COMPONENT);
        let wanted = config.max_memory_bytes;
        // wasmtime's default slot: at least 4 GiB, then the guard.
        if memories * (wanted.max(DEFAULT_RESERVATION) + LARGE_GUARD) <= MEMORY_ADDRESS_SPACE {
            return MemorySlots {
                max_memory_bytes: wanted,
                guard_bytes: LARGE_GUARD,
            };
        }
        let room = (MEMORY_ADDRESS_SPACE / memories).saturating_sub(SMALL_GUARD);
        // A power of two (at least one wasm page), so the limit reads well.
        let fits = if room < 1 << 16 {
            1 << 16
        } else {
            1u64 << (63 - room.leading_zeros())
        };
        MemorySlots {
            max_memory_bytes: fits.min(wanted),
            guard_bytes: SMALL_GUARD,
        }
    }
}

/// The wasmtime configuration the engine is built with for `config`
/// (public so that benchmarks compare against a bare host set up the
/// same way).
pub fn wasmtime_config(config: &EngineConfig) -> Config {
    let slots = MemorySlots::for_config(config);
    engine_config(&slots, pooling_config(config, &slots))
}

/// The pool for `config`: room for every live instance, memories in
/// `slots`.
fn pooling_config(config: &EngineConfig, slots: &MemorySlots) -> PoolingAllocationConfig {
    let live = config.max_instances + POOL_HEADROOM;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(live)
        .total_core_instances(live * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(live * MEMORIES_PER_COMPONENT)
        .total_tables(live * TABLES_PER_COMPONENT)
        .total_stacks(live)
        .max_memory_size(slots.max_memory_bytes as usize)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool
}

fn engine_config(slots: &MemorySlots, pool: PoolingAllocationConfig) -> Config {
    let mut wasm = Config::new();
    if slots.guard_bytes == SMALL_GUARD {
        wasm.memory_reservation(slots.max_memory_bytes)
            .memory_guard_size(SMALL_GUARD)
            .memory_reservation_for_growth(0);
    }
    wasm.epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    wasm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_slots_shrink_only_when_the_instances_do_not_fit() {
        let config = |max_instances| {
            EngineConfig::from(&DaemonConfig {
                max_instances,
                ..DaemonConfig::default()
            })
        };
        let few = MemorySlots::for_config(&config(1000));
        assert_eq!(few.max_memory_bytes, 4 << 30);
        assert_eq!(few.guard_bytes, LARGE_GUARD);
        let many = MemorySlots::for_config(&config(100_000));
        assert_eq!(many.max_memory_bytes, 128 << 20);
        assert_eq!(many.guard_bytes, SMALL_GUARD);
        let memories = u64::from(100_000 + POOL_HEADROOM) * u64::from(MEMORIES_PER_COMPONENT);
        assert!(memories * (many.max_memory_bytes + many.guard_bytes) <= MEMORY_ADDRESS_SPACE);
        // The daemon lowers its limit to what fits; sized again, that
        // still fits.
        let lowered = EngineConfig {
            max_memory_bytes: many.max_memory_bytes,
            ..config(100_000)
        };
        assert_eq!(MemorySlots::for_config(&lowered), many);
        // An engine whose memories are sized for them builds: the address
        // space holds them. (Its stacks are fewer: each stack's guard page
        // is a mapping of its own, and 100,000 of them need a
        // vm.max_map_count above the kernel's default, which `mesh up`
        // asks the operator to raise.)
        let mut pool = pooling_config(&lowered, &many);
        pool.total_stacks(64);
        let engine = wasmtime::Engine::new(&engine_config(&many, pool));
        assert!(engine.is_ok(), "{:?}", engine.err());
    }
}
