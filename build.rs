//! Rebuilds when `migrations/` changes: the migrations are embedded at build time
//! (`refinery::embed_migrations!`), and a new file must not be missed by an incremental build.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
