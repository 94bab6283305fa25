//! `attend._attend`: the compiled half of the Python package. The pure-Python half
//! (`python/attend`) turns PyTorch-style calls into flat, C-contiguous float32 arrays and the
//! sizes below; every function here reads those arrays in place (no copy), releases the GIL
//! while it computes, and hands its results back as NumPy arrays that own the Rust buffers
//! (no copy either). Errors become the exceptions of `attend.errors`; nothing a caller passes
//! ends in a panic.
//!
//! One file per job: `errors` (Rust errors as Python exceptions), `threads` (the pool),
//! `kernels` (attention on flat arrays), `models` (encoders, causal models, what a name is),
//! `page` (the viewer and the explanation queries), `training` (`attend.train`).

#![forbid(unsafe_code)]

mod errors;
mod kernels;
mod models;
mod page;
mod threads;
mod training;

use pyo3::prelude::*;

use kernels::{backward, forward, weights, LayerCache};
use models::{known_models, model_kind, CausalLM, Encoder, TokenStream};
use page::{external_page, write_output, Page};
use threads::{get_num_threads, set_num_threads};
use training::train;

#[pymodule]
fn _attend(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(forward, m)?)?;
    m.add_function(wrap_pyfunction!(weights, m)?)?;
    m.add_function(wrap_pyfunction!(backward, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(model_kind, m)?)?;
    m.add_function(wrap_pyfunction!(known_models, m)?)?;
    m.add_function(wrap_pyfunction!(write_output, m)?)?;
    m.add_function(wrap_pyfunction!(external_page, m)?)?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_class::<LayerCache>()?;
    m.add_class::<Encoder>()?;
    m.add_class::<CausalLM>()?;
    m.add_class::<TokenStream>()?;
    m.add_class::<Page>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
