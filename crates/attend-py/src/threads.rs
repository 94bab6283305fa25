//! The thread pool every call runs on: rayon's global pool until `set_num_threads` sets one.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use crate::errors::raise;

pub(crate) static POOL: Mutex<Option<Arc<rayon::ThreadPool>>> = Mutex::new(None);

/// Runs `f` on the pool `set_num_threads` chose (rayon's global pool until then).
pub(crate) fn on_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let pool = POOL.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

/// Sets the number of threads every later call uses (1 to 1024).
#[pyfunction]
pub(crate) fn set_num_threads(py: Python<'_>, n: usize) -> PyResult<()> {
    if !(1..=1024).contains(&n) {
        return Err(raise(
            py,
            "InvalidArgument",
            format!("set_num_threads({n}): give 1 to 1024 threads"),
        ));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .map_err(|e| raise(py, "AttendError", format!("cannot start {n} threads: {e}")))?;
    *POOL.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(pool));
    Ok(())
}

/// The number of threads calls use.
#[pyfunction]
pub(crate) fn get_num_threads() -> usize {
    on_pool(rayon::current_num_threads)
}
