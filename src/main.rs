//! The `weft` binary: everything lives in the library; this only hands over to it.

/// mimalloc: under load (pages rendered on every core, SQLite connections on their
/// own threads) glibc's allocator spent a fifth of the server's time in its arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(weft::cli::main());
}
