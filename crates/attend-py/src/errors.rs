//! Errors as the exceptions of `attend.errors` (`ShapeError`, `InvalidArgument`,
//! `ModelError`, `AttendError`): every Rust error a call can meet maps to one.

use numpy::PyReadonlyArrayDyn;
use pyo3::exceptions::PyMemoryError;
use pyo3::prelude::*;
use pyo3::types::PyType;

pub(crate) fn raise(py: Python<'_>, class: &str, msg: String) -> PyErr {
    match py
        .import("attend.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from))
    {
        Ok(ty) => PyErr::from_type(ty, msg),
        Err(e) => e,
    }
}

pub(crate) fn attend_err(py: Python<'_>, e: attend::Error) -> PyErr {
    use attend::Error as E;
    let msg = e.to_string();
    match e {
        E::ZeroDim { .. }
        | E::HeadsNotDivisible { .. }
        | E::ShapeMismatch { .. }
        | E::KeyLengthOutOfRange { .. }
        | E::TooLarge { .. } => raise(py, "ShapeError", msg),
        E::OutOfMemory { .. } => PyMemoryError::new_err(msg),
        _ => raise(py, "InvalidArgument", msg),
    }
}

pub(crate) fn model_err(py: Python<'_>, e: attend_models::Error) -> PyErr {
    use attend_models::Error as E;
    let msg = e.to_string();
    match e {
        E::Attention(a) => attend_err(py, a),
        E::Io { .. }
        | E::Format { .. }
        | E::MissingTensor { .. }
        | E::TensorShape { .. }
        | E::UnknownModel { .. }
        | E::Fetch { .. } => raise(py, "ModelError", msg),
        E::ContextExceeded { .. } | E::TextLength { .. } | E::Invalid(_) => {
            raise(py, "InvalidArgument", msg)
        }
        _ => raise(py, "AttendError", msg),
    }
}

pub(crate) fn slice<'a, T: numpy::Element>(
    py: Python<'_>,
    what: &str,
    a: &'a PyReadonlyArrayDyn<'_, T>,
) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| {
        raise(
            py,
            "ShapeError",
            format!("`{what}` must be C-contiguous (attend.* converts it; this is a bug)"),
        )
    })
}
