//! The `certwatch` binary: all the work is in the library.

fn main() {
    std::process::exit(certwatch::cli::main());
}
