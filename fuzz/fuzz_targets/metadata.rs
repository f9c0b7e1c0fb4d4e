//! The metadata readers on arbitrary documents: a v2 `.zarray`, a v3 `zarr.json`, v2
//! consolidated `.zmetadata` and v3 consolidated metadata, each then opened as zarrs
//! arrays (`ArrayHandle::new`), as `open_array`/`open_group` do. The first byte picks
//! the document; the rest is its text, written into a scratch store.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use fastzarr::array::ArrayHandle;
use fastzarr::metadata::{read_node, Node};
use fastzarr::store::Store;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fastzarr-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn open_all(store: &std::sync::Arc<Store>, node: Node) {
    match node {
        Node::Array(metadata) => {
            let _ = ArrayHandle::new(store.clone(), "", *metadata);
        }
        Node::Group(group) => {
            if let Some(entries) = group.consolidated {
                for (path, node) in entries.iter() {
                    if let Node::Array(metadata) = node {
                        let _ = ArrayHandle::new(store.clone(), path, (**metadata).clone());
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    for name in ["zarr.json", ".zarray", ".zgroup", ".zmetadata", ".zattrs"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    match which % 4 {
        0 => std::fs::write(dir.join(".zarray"), text).unwrap(),
        1 => std::fs::write(dir.join("zarr.json"), text).unwrap(),
        2 => {
            std::fs::write(dir.join(".zgroup"), br#"{"zarr_format": 2}"#).unwrap();
            std::fs::write(dir.join(".zmetadata"), text).unwrap();
        }
        _ => {
            let wrapped = format!(
                r#"{{"zarr_format": 3, "node_type": "group", "consolidated_metadata": {}}}"#,
                String::from_utf8_lossy(text)
            );
            std::fs::write(dir.join("zarr.json"), wrapped).unwrap();
        }
    }
    let Ok(store) = Store::open(dir.to_str().unwrap(), Default::default()) else {
        return;
    };
    if let Ok(node) = read_node(&store, "") {
        open_all(&store, node);
    }
});
