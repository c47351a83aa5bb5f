//! ProcessControl facade.
pub use processcontrol_core as core;
