//! The `whopgate` command; what it does is [`whopgate::cli`].

use std::process::ExitCode;

/// Per-thread heaps: the request path allocates a little, on every worker at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    whopgate::cli::main()
}
