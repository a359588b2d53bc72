//! One module per subcommand.

pub mod chunk;
pub mod ctl;
pub mod run;
