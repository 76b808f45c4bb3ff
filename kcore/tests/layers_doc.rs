//! Keeps docs/LAYERS.md honest: all 34 layers have a row, and every path it names exists.

use std::path::Path;

#[test]
fn layer_table_paths_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/LAYERS.md")).expect("docs/LAYERS.md");
    let mut rows = Vec::new();
    let mut paths = 0;
    for line in doc.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let Ok(n) = cells[1].parse::<u32>() {
            rows.push(n);
        }
        for (i, chunk) in line.split('`').enumerate() {
            if i % 2 == 1 && chunk.contains('/') {
                assert!(root.join(chunk).exists(), "docs/LAYERS.md names {chunk}, which does not exist");
                paths += 1;
            }
        }
    }
    assert_eq!(rows, (0..=34).collect::<Vec<_>>(), "one row per layer, 0 (machine) to 34, in order");
    assert!(paths >= 20, "the table names the code it describes");
}
