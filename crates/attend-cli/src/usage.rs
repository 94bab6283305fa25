//! A usage error: the command line asked for something impossible (exit code 2).

/// Marks an error as the user's command line's fault.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// `Err(Usage(...))` as an `anyhow::Error`.
#[macro_export]
macro_rules! usage {
    ($($t:tt)*) => { anyhow::Error::new($crate::usage::Usage(format!($($t)*))) };
}
