//! CUDA device set-up that Candle leaves at the driver's defaults.

use candle_core::{Device, Result};

/// Keep freed GPU memory in the device's pool.
///
/// Candle allocates from the default stream-ordered pool (`cuMemAllocAsync`), whose
/// release threshold is 0: at every synchronisation (each copy of a result to the host) the
/// pool hands its free memory back to the driver, and the next batch maps it again. On an
/// H100 that cost about 4 ms per 400 MB activation, more than the convolution producing it
/// (docs/performance.md, GPU). With the threshold at its maximum the pool keeps what it
/// has, as PyTorch's caching allocator does; the memory stays reserved for this process.
pub fn keep_freed_memory(device: &Device) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let stream = d.cuda_stream();
        let cu_device = stream.context().cu_device();
        let mut pool = std::ptr::null_mut();
        let mut threshold = u64::MAX;
        // SAFETY: the default pool of a device this process holds a context on; the
        // attribute takes a pointer to a u64.
        let r = unsafe {
            match sys::cuDeviceGetDefaultMemPool(&mut pool, cu_device) {
                sys::CUresult::CUDA_SUCCESS => sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    &mut threshold as *mut u64 as *mut _,
                ),
                e => e,
            }
        };
        if r != sys::CUresult::CUDA_SUCCESS {
            candle_core::bail!("CUDA memory pool set-up: {r:?}");
        }
    }
    let _ = device;
    Ok(())
}
