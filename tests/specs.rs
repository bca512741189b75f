//! The spec database in specs/: every file parses, FLOPs are dense, and every product's
//! own device name (at its own memory size) matches exactly one sheet.

use solbench_core::backend::DeviceInfo;
use solbench_core::spec::SpecDb;

fn load() -> (Vec<(String, String)>, SpecDb) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/specs");
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let db = SpecDb::parse(&refs).unwrap();
    (files, db)
}

#[test]
fn the_required_products_are_there_with_sources() {
    let (_, db) = load();
    for id in [
        "nvidia-h100-sxm",
        "nvidia-h100-pcie",
        "nvidia-h100-nvl",
        "nvidia-h200-sxm",
        "nvidia-b200",
        "nvidia-gb200",
        "nvidia-a100-sxm4-80gb",
        "nvidia-a100-40gb",
        "nvidia-l40s",
        "nvidia-l4",
        "amd-mi250x",
        "amd-mi300x",
        "amd-mi325x",
        "amd-mi355x",
    ] {
        let s = db
            .specs
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("missing {id}"));
        let bw = s
            .memory_peak()
            .unwrap_or_else(|| panic!("{id} has no memory bandwidth"));
        assert!(!bw.source.is_empty());
        assert!(s.compute_peak("bf16").is_some(), "{id} has no bf16 peak");
    }
}

#[test]
fn flops_are_dense_not_sparse() {
    let (_, db) = load();
    let dense = |id: &str, key: &str| {
        db.specs
            .iter()
            .find(|s| s.id == id)
            .unwrap()
            .compute_peak(key)
            .unwrap()
            .value
    };
    assert_eq!(dense("nvidia-h100-sxm", "bf16"), 989.0);
    assert_eq!(dense("nvidia-h100-sxm", "fp8"), 1979.0);
    assert_eq!(dense("nvidia-a100-sxm4-80gb", "bf16"), 312.0);
    assert!((dense("amd-mi300x", "bf16") - 1307.4).abs() < 1.0);
    assert!((dense("nvidia-b200", "bf16") - 2250.0).abs() < 1.0);
    // The A100 and the MI250X have no FP8 at all.
    assert!(db
        .specs
        .iter()
        .find(|s| s.id == "nvidia-a100-40gb")
        .unwrap()
        .compute_peak("fp8")
        .is_none());
    assert!(db
        .specs
        .iter()
        .find(|s| s.id == "amd-mi250x")
        .unwrap()
        .compute_peak("fp8")
        .is_none());
}

#[test]
fn each_product_matches_only_itself() {
    let (_, db) = load();
    let devices = [
        ("NVIDIA H100 80GB HBM3", 79.1, "nvidia-h100-sxm"),
        ("NVIDIA H100 PCIe", 79.1, "nvidia-h100-pcie"),
        ("NVIDIA H100 NVL", 93.6, "nvidia-h100-nvl"),
        ("NVIDIA H200", 139.8, "nvidia-h200-sxm"),
        ("NVIDIA H200 NVL", 139.8, "nvidia-h200-nvl"),
        ("NVIDIA B200", 178.4, "nvidia-b200"),
        ("NVIDIA GB200", 184.0, "nvidia-gb200"),
        ("NVIDIA A100-SXM4-80GB", 79.2, "nvidia-a100-sxm4-80gb"),
        ("NVIDIA A100 80GB PCIe", 79.2, "nvidia-a100-pcie-80gb"),
        ("NVIDIA A100-SXM4-40GB", 39.4, "nvidia-a100-40gb"),
        ("NVIDIA A100-PCIE-40GB", 39.4, "nvidia-a100-40gb"),
        ("NVIDIA L40S", 44.5, "nvidia-l40s"),
        ("NVIDIA L4", 22.0, "nvidia-l4"),
        ("AMD Instinct MI300X", 191.5, "amd-mi300x"),
        ("AMD Instinct MI325X", 255.9, "amd-mi325x"),
        ("AMD Instinct MI355X", 287.6, "amd-mi355x"),
    ];
    for (name, gib, want) in devices {
        let d = DeviceInfo {
            backend: "gpu".into(),
            name: name.into(),
            memory_bytes: Some((gib * (1u64 << 30) as f64) as u64),
            ..Default::default()
        };
        let got = db
            .match_device(&d)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            got.map(|s| s.id.as_str()),
            Some(want),
            "{name} at {gib} GiB"
        );
    }
    let cpu = DeviceInfo {
        backend: "host".into(),
        name: "AMD EPYC 9654 96-Core Processor".into(),
        memory_bytes: Some(1 << 40),
        ..Default::default()
    };
    assert!(db.match_device(&cpu).unwrap().is_none());
}
