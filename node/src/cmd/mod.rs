//! One module per subcommand.

pub mod asof;
pub mod chunk;
pub mod ctl;
pub mod files;
pub mod format;
pub mod members;
pub mod run;
pub mod status;
