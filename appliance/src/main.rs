//! `vpbox`: one binary for the operators' tools and, as they land, the box's services.

use std::process::ExitCode;

fn main() -> ExitCode {
    vpbox_appliance::cli::main(std::env::args_os())
}
