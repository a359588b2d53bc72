//! One module per subcommand.

pub mod chunk;
