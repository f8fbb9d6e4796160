/*
 * seqlock.h - memory-ordering primitives of the shared price book (ext/_pricebook.pyx).
 *
 * Layout-agnostic on purpose: the segment structs are declared once, in _pricebook.pxd.
 * Everything here works on naked 32/64-bit words so there is a single place to audit the
 * fences. All shared words are accessed through GCC __atomic builtins (never plain or
 * volatile accesses), so there is no C-level data race (UB) even though readers run
 * concurrently with the writer; on x86-64 and AArch64 a relaxed 64-bit aligned atomic load
 * or store is the same single mov / ldr / str as a plain one, so this costs nothing.
 *
 * ------------------------------------------------------------------ seqlock (one slot)
 * Writer (already serialised against other writers by the book lock):
 *
 *   s = load_relaxed(seq) | 1        relaxed: only writers store seq and we hold the lock,
 *                                    whose acquire made the previous writer's s+2 visible.
 *                                    The `| 1` is the odd value (s + 1 for an even s).
 *   store_relaxed(seq, s)            odd: "write in progress".
 *   fence(RELEASE)                   (F_w) orders the odd store before every data store that
 *                                    follows. x86-TSO never reorders store->store, so this is
 *                                    only a compiler barrier there; on ARM it is a `dmb ish`,
 *                                    without which a reader could see the new data while still
 *                                    reading the old even seq on both sides of its copy.
 *   store_relaxed(data words...)     atomic (no UB) but unordered among themselves.
 *   store_release(seq, s + 1)        even again; release orders all data stores before it.
 *
 * Why the writer never waits on a slot it finds odd: it holds the lock, so no legitimate write
 * is in progress; an odd seq it loads was left by a writer killed mid-write or by a foreign
 * process scribbling on the segment. Waiting for it to turn even would wait forever. Taking
 * s | 1 as its own odd value keeps every reader guarantee: a reader that loaded the foreign odd
 * value retries (odd); one that loaded an older even value E sees s2 != E because seq has been
 * odd since; and the closing s + 1 is an even value no reader has seen paired with other data,
 * because seq only ever grows through it (the foreign odd value is < s + 1). The argument below
 * needs only "odd store, F_w, data, even release store", which this still is. For an even seq it
 * is the same arithmetic as always (s | 1 == s + 1), and it is branch-free.
 *
 * Reader:
 *
 *   s1 = load_acquire(seq)           acquire: data loads below cannot move above it; if s1
 *                                    reads the writer's s+2, the store_release synchronises
 *                                    with it, so the copy sees that write's data (or newer).
 *   if (s1 odd) retry                a writer is mid-update; never copy from it.
 *   copy = load_relaxed(data words)
 *   fence(ACQUIRE)                   (F_r) data loads cannot move below the re-check. On ARM
 *                                    loads may be reordered with each other; the acquire fence
 *                                    is `dmb ishld`. On x86 loads are not reordered with loads
 *                                    and it is a compiler barrier only.
 *   s2 = load_relaxed(seq)
 *   if (s1 == s2) the copy is consistent, else retry.
 *
 * Why a torn copy can never be returned (the C11 argument, Boehm 2012 "Can seqlocks get
 * along with programming language memory models?"): suppose some data load in the copy read a
 * value stored by write W (seq s -> s+1 -> s+2). That store follows F_w in W, and the load
 * precedes F_r, so F_w synchronises-with F_r; hence W's odd store (before F_w) happens-before
 * the s2 load (after F_r), and by write-read coherence s2 >= s+1. If the copy mixes data of W
 * with anything older, s1 <= s (s1 was read before W's data became visible), so s2 != s1 and
 * we retry. If it mixes W with something newer, s2 >= s+3 by the same argument applied to
 * the newer write while s1 <= s+2. Either way s1 == s2 implies all words came from one write.
 *
 * --------------------------------------------------------------- doorbell (Dekker)
 * Writer publish():  fetch_add(publish_seq, 1, SEQ_CST)  [W1];  n = load(sleepers, SEQ_CST) [R1]
 *                    if n: for entries: CAS(state SLEEPING->AWAKE) -> fetch_sub(sleepers), ring.
 * Reader arm():      fetch_add(sleepers, 1, SEQ_CST) [W2]; CAS(state AWAKE->SLEEPING, SEQ_CST)
 *                    (undo the add if the CAS fails); p = load(publish_seq, SEQ_CST) [R2];
 *                    if p != last polled: disarm, don't sleep.
 *
 * Each side stores its flag and then loads the other side's flag - the classic Dekker shape,
 * which needs store->load ordering. x86-TSO *does* reorder a store with a later load (the
 * store buffer), so acquire/release is not enough here: all four are SEQ_CST (a lock-prefixed
 * RMW on x86 is a full barrier; on ARMv8 ldaxr/stlxr + ldar are RCsc). In the single total
 * order S of SEQ_CST operations either W1 precedes R2 (the reader sees the publish and does
 * not sleep) or R2 precedes W1, in which case W2 < R2 < W1 < R1, so the writer sees
 * sleepers > 0. Moreover every update of sleepers is an RMW, so R1 reads from W2's release
 * sequence: the reader's CAS to SLEEPING (sequenced before W2) happens-before the writer's
 * scan, which therefore sees SLEEPING and rings. No lost wake-up in either interleaving.
 *
 * Invariant: sleepers >= the number of SLEEPING entries, at every instant. The add comes
 * BEFORE an entry can become SLEEPING, and the matching sub comes only AFTER it has left
 * SLEEPING (by whoever wins CAS SLEEPING->AWAKE: the writer when waking, the reader when
 * disarming). The opposite order (CAS first, add second) is wrong with two readers: the
 * writer can claim reader A between A's CAS and A's add and decrement first, so the counter
 * undercounts by one and reads 0 while reader B sleeps - B's next publish is skipped and its
 * wake-up lost (tests/test_pricebook.py reproduces this interleaving). The counter may
 * overcount for a moment (an add whose CAS is about to fail or be undone); that only costs the
 * writer a scan that finds nobody. The per-entry CAS is the authority on who rings.
 */
#ifndef TRADESTACK_SEQLOCK_H
#define TRADESTACK_SEQLOCK_H

#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#define TSB_INLINE static inline __attribute__((always_inline))

#define TSB_STATE_FREE 0u
#define TSB_STATE_AWAKE 1u
#define TSB_STATE_SLEEPING 2u

/* Spin this many pause iterations on an odd seq before yielding the CPU: on a 2-core box
 * a writer preempted mid-write would otherwise make the reader burn its whole timeslice. */
#define TSB_SPINS_BEFORE_YIELD 128u

#if defined(__x86_64__) || defined(__i386__)
#define tsb_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define tsb_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define tsb_cpu_relax() __atomic_signal_fence(__ATOMIC_SEQ_CST)
#endif

/* ---- bit casts: the double travels as its IEEE-754 bits in a uint64 word ---- */
TSB_INLINE uint64_t tsb_f64_bits(double d) { uint64_t u; memcpy(&u, &d, sizeof u); return u; }
TSB_INLINE double tsb_bits_f64(uint64_t u) { double d; memcpy(&d, &u, sizeof d); return d; }

TSB_INLINE int64_t tsb_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO; same clock as time.monotonic_ns() */
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- plain atomic word accessors (used for header/control fields) ---- */
TSB_INLINE uint64_t tsb_u64_load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
TSB_INLINE uint64_t tsb_u64_load_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
TSB_INLINE void tsb_u64_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
TSB_INLINE void tsb_u64_store_relaxed(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
TSB_INLINE int64_t tsb_i64_load_relaxed(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
TSB_INLINE void tsb_i64_store_release(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
TSB_INLINE uint32_t tsb_u32_load_acquire(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
TSB_INLINE uint32_t tsb_u32_load_relaxed(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
TSB_INLINE uint32_t tsb_u32_load_seqcst(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
TSB_INLINE void tsb_u32_store_release(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
TSB_INLINE void tsb_u32_store_seqcst(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
TSB_INLINE uint32_t tsb_u32_fetch_add_seqcst(uint32_t *p, uint32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
TSB_INLINE uint32_t tsb_u32_fetch_sub_seqcst(uint32_t *p, uint32_t v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
TSB_INLINE int tsb_u32_cas_seqcst(uint32_t *p, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* ---- seqlock: see the argument at the top of the file ---- */

/* Caller holds the writer lock. `words` are the n payload words that follow seq. */
TSB_INLINE void tsb_seq_write(uint64_t *seq, uint64_t *words, const uint64_t *src, unsigned n) {
    uint64_t s = __atomic_load_n(seq, __ATOMIC_RELAXED) | 1u;   /* odd; see the top of file */
    __atomic_store_n(seq, s, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);                 /* F_w */
#pragma GCC unroll 8
    for (unsigned k = 0; k < n; k++)
        __atomic_store_n(&words[k], src[k], __ATOMIC_RELAXED);
    __atomic_store_n(seq, s + 1, __ATOMIC_RELEASE);
}

/* One attempt. Returns 1 and the (even) version in *ver if dst holds a consistent copy. */
TSB_INLINE int tsb_seq_try_read(const uint64_t *seq, const uint64_t *words, uint64_t *dst,
                                unsigned n, uint64_t *ver) {
    uint64_t s1 = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
    if (s1 & 1u)
        return 0;
#pragma GCC unroll 8
    for (unsigned k = 0; k < n; k++)
        dst[k] = __atomic_load_n(&words[k], __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);                 /* F_r */
    if (__atomic_load_n(seq, __ATOMIC_RELAXED) != s1)
        return 0;
    *ver = s1;
    return 1;
}

/* Retry until consistent, giving up after `max_yields` CPU yields (a writer killed mid-write
 * leaves seq odd forever; the caller then checks signals / times out instead of hanging).
 * Returns 1 with a consistent copy in dst, 0 otherwise. Never returns a torn copy. Readers
 * only ever wait while a writer is inside its few-store critical section (or preempted). */
TSB_INLINE int tsb_seq_read(const uint64_t *seq, const uint64_t *words, uint64_t *dst,
                            unsigned n, unsigned max_yields, uint64_t *ver) {
    unsigned spins = 0, yields = 0;
    while (!tsb_seq_try_read(seq, words, dst, n, ver)) {
        if (++spins < TSB_SPINS_BEFORE_YIELD) {
            tsb_cpu_relax();
        } else {
            if (++yields > max_yields)
                return 0;
            spins = 0;
            sched_yield();
        }
    }
    return 1;
}

/* Debug only (tests prove the torn-read detector works): copy WITHOUT the seq protocol. */
TSB_INLINE void tsb_unchecked_read(const uint64_t *words, uint64_t *dst, unsigned n) {
    for (unsigned k = 0; k < n; k++)
        dst[k] = __atomic_load_n(&words[k], __ATOMIC_RELAXED);
}

/* Debug only: the same protocol with `spins` pauses after each payload store, so a test can
 * hold the slot odd for a long time and show the reader still never returns a torn copy. */
static inline void tsb_seq_write_slow(uint64_t *seq, uint64_t *words, const uint64_t *src,
                                      unsigned n, unsigned spins) {
    uint64_t s = __atomic_load_n(seq, __ATOMIC_RELAXED) | 1u;
    __atomic_store_n(seq, s, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    for (unsigned k = 0; k < n; k++) {
        __atomic_store_n(&words[k], src[k], __ATOMIC_RELAXED);
        for (unsigned j = 0; j < spins; j++)
            tsb_cpu_relax();
    }
    __atomic_store_n(seq, s + 1, __ATOMIC_RELEASE);
}

/* ---- doorbell: see the Dekker argument at the top of the file ---- */

/* Writer: announce a batch; returns the sleeper hint (scan entries iff non-zero). */
TSB_INLINE uint32_t tsb_publish(uint32_t *publish_seq, const uint32_t *sleepers) {
    __atomic_fetch_add(publish_seq, 1u, __ATOMIC_SEQ_CST);            /* W1 */
    return __atomic_load_n(sleepers, __ATOMIC_SEQ_CST);               /* R1 */
}

/* Writer: claim the right to ring one entry. The acquire pre-check keeps non-sleeping
 * readers' cache lines shared (no RMW); it cannot miss a sleeper that the Dekker argument
 * guarantees, because that reader's CAS happens-before this load (see top of file). */
TSB_INLINE int tsb_wake_claim(uint32_t *state, uint32_t *sleepers) {
    /* SEQ_CST (the same instruction as acquire on x86 and ARMv8): the Dekker argument needs
     * this load in the single total order, after R1, to see the reader's CAS. */
    if (__atomic_load_n(state, __ATOMIC_SEQ_CST) != TSB_STATE_SLEEPING)
        return 0;
    if (!tsb_u32_cas_seqcst(state, TSB_STATE_SLEEPING, TSB_STATE_AWAKE))
        return 0;                                /* the reader disarmed itself first */
    __atomic_fetch_sub(sleepers, 1u, __ATOMIC_SEQ_CST);
    return 1;
}

/* Reader: returns 1 if the caller may now sleep on its doorbell, 0 if it must not
 * (publish since `seen`), -1 if the entry is not in an armable state (not ours). */
TSB_INLINE int tsb_disarm(uint32_t *state, uint32_t *sleepers);
TSB_INLINE int tsb_arm(uint32_t *state, uint32_t *sleepers, const uint32_t *publish_seq,
                       uint32_t seen) {
    uint32_t expected = TSB_STATE_AWAKE;
    __atomic_fetch_add(sleepers, 1u, __ATOMIC_SEQ_CST);               /* W2: before the CAS */
    if (!__atomic_compare_exchange_n(state, &expected, TSB_STATE_SLEEPING, 0,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        __atomic_fetch_sub(sleepers, 1u, __ATOMIC_SEQ_CST);           /* no transition: undo */
        if (expected != TSB_STATE_SLEEPING)
            return -1;                           /* already armed is fine; FREE is not */
    }
    if (__atomic_load_n(publish_seq, __ATOMIC_SEQ_CST) == seen)       /* R2 */
        return 1;
    tsb_disarm(state, sleepers);
    return 0;
}

/* Reader: back to AWAKE. Returns 1 if we undid our own arm, 0 if the writer already woke
 * us (it won the CAS and decremented sleepers, and a doorbell byte is on its way). */
TSB_INLINE int tsb_disarm(uint32_t *state, uint32_t *sleepers) {
    if (!tsb_u32_cas_seqcst(state, TSB_STATE_SLEEPING, TSB_STATE_AWAKE))
        return 0;
    __atomic_fetch_sub(sleepers, 1u, __ATOMIC_SEQ_CST);
    return 1;
}

#endif /* TRADESTACK_SEQLOCK_H */
