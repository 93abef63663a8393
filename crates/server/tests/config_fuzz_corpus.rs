//! Replays the `config_toml` fuzz corpus (fuzz/corpus and fuzz/regressions)
//! through the configuration parser on stable Rust: no input panics, and the
//! documented example parses.

use std::fs;
use std::path::{Path, PathBuf};
use tributary::config::Config;

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for kind in ["corpus", "regressions"] {
        if let Ok(rd) = fs::read_dir(dir.join(kind).join("config_toml")) {
            out.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    out.sort();
    out
}

#[test]
fn replay_config_corpus() {
    let files = files();
    assert!(!files.is_empty(), "no config_toml corpus");
    for f in &files {
        let bytes = fs::read(f).expect("corpus file");
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = Config::parse(text, Path::new("fuzz.toml"));
        }
    }
}

/// docs/configuration.md's example file stays valid as keys change.
#[test]
fn the_documented_configuration_parses() {
    let doc = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let start = doc.find("```toml").expect("a toml block") + "```toml".len();
    let end = start + doc[start..].find("```").expect("its end");
    Config::parse(&doc[start..end], Path::new("configuration.md"))
        .expect("docs/configuration.md's example");
}
