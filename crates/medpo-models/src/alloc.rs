//! Keeping freed memory in the process.
//!
//! A training step or a scoring batch allocates and frees the same few hundred tensors of
//! 1–30 MB every time. With glibc's defaults, large blocks come from `mmap` and go back with
//! `munmap`, and the top of the heap is trimmed: every step then page-faults its buffers in
//! again, and every `munmap` in a multi-threaded process interrupts the other cores to flush
//! their TLBs. On the medium benchmark model that kernel work was 15–20 % of an mDPO step
//! (`perf`: `native_write_msr`, `smp_call_function_many_cond`, page faults).
//! [`retain_freed_memory`] raises glibc's mmap threshold to its maximum (32 MiB) and disables
//! trimming, so freed blocks are reused by the next step instead. The peak RSS does not grow
//! (the same blocks are reused), only the memory is not handed back between steps.

/// Sets glibc's allocator to keep freed memory for reuse (see the module docs). Call once at
/// the start of a program that runs models; a no-op on other C libraries.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // SAFETY: mallopt only sets allocator parameters; it is called before the model's
        // threads run, and both values are in the ranges glibc documents.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, std::ffi::c_int::MAX);
        }
    }
}
