//! The decode attention kernels of kernels/attention_decode.cu run by the SIMT harness with
//! the launch configurations the CUDA backend computes (`solbench_cuda::attention_launch`,
//! the same functions, for a small GPU), on inputs and storage layouts built by the
//! backend's own code (`solbench_cuda::attention`), and checked by the backend's own check
//! against the host's naive f64 attention: MHA, GQA (groups 4, 8, 16, 40), MLA at its real
//! 576/512 dims (16- and 64-row blocks), contiguous and paged K/V, BF16 and FP16, lengths
//! that are not multiples of the tile or the page, splits with 0 or 1 tiles, the combine
//! against the host's, partials against the attention of their own keys.
//!
//! Shapes stay tiny: every emulated thread is an OS thread and every mma/ldmatrix a warp
//! rendezvous, and CI runs this file under ThreadSanitizer too.

use solbench_core::case::{AttentionCase, AttentionPhase, AttentionVariant, Dtype, KvLayout};
use solbench_cuda::attention::{self as gpu, DecodeInputs, KvTensor, PageTable, SequenceOutput};
use solbench_cuda::attention_launch::{self as plan, DecodeLaunch};
use solbench_host::attention_reference::{self as reference, AttentionShape, KvSource};
use solbench_simt::{Arg, Buffer, ErrorKind, Schedule, Simt};

/// The GPU the launch functions plan for: 4 SMs with 2 resident blocks each, so the split
/// model asks for splits on these short sequences, as it would on a real GPU at small batch.
const SMS: u32 = 4;
const BLOCKS_PER_SM: u32 = 2;
/// An H100's opt-in shared memory per block (kernel selection).
const SMEM_OPTIN: u32 = 232_448;

#[derive(Clone, Copy, Debug)]
struct Spec {
    variant: AttentionVariant,
    batch: u64,
    q_len: u64,
    q_heads: u64,
    kv_heads: u64,
    d: u64,
    kv_len: u64,
    page: Option<u32>,
    dtype: Dtype,
    causal: bool,
}

fn gqa(batch: u64, q_heads: u64, kv_heads: u64, d: u64, kv_len: u64) -> Spec {
    Spec {
        variant: if q_heads == kv_heads {
            AttentionVariant::Mha
        } else {
            AttentionVariant::Gqa
        },
        batch,
        q_len: 1,
        q_heads,
        kv_heads,
        d,
        kv_len,
        page: None,
        dtype: Dtype::Bf16,
        causal: false,
    }
}

fn mla(batch: u64, q_heads: u64, kv_len: u64) -> Spec {
    Spec {
        variant: AttentionVariant::Mla,
        ..gqa(batch, q_heads, 1, 576, kv_len)
    }
}

impl Spec {
    fn paged(self, page: u32) -> Spec {
        Spec {
            page: Some(page),
            ..self
        }
    }

    fn f16(self) -> Spec {
        Spec {
            dtype: Dtype::F16,
            ..self
        }
    }

    fn case(&self) -> AttentionCase {
        let mla = self.variant == AttentionVariant::Mla;
        AttentionCase {
            variant: self.variant,
            phase: AttentionPhase::Decode,
            causal: self.causal,
            batch: self.batch,
            q_len: self.q_len,
            kv_len: self.kv_len,
            q_heads: self.q_heads,
            kv_heads: self.kv_heads,
            head_dim_qk: self.d,
            head_dim_v: if mla { 512 } else { self.d },
            dtype: self.dtype,
            kv_dtype: None,
            kv_layout: match self.page {
                None => KvLayout::Contiguous,
                Some(page_size) => KvLayout::Paged { page_size },
            },
            model: None,
        }
    }
}

/// What one decode call left: the launch, every sequence's output, and the raw partials.
struct Ran {
    launch: DecodeLaunch,
    inputs: DecodeInputs,
    q: Vec<f32>,
    outputs: Vec<SequenceOutput>,
    /// (o_partial, lse_partial) when there was more than one split.
    partials: Option<(Vec<f32>, Vec<f32>)>,
}

fn bits_buffer(label: &str, bits: &[u16]) -> Buffer {
    Buffer::from_slice(label, bits).expect("allocate")
}

/// Runs the split kernel (and the combine) for `spec` the way the workload does; `splits`
/// forces a split count, else the backend's model picks it; `table` replaces the block
/// table (its rows may be longer than the sequence needs).
fn run(spec: Spec, splits: Option<u32>, schedule: Schedule, table: Option<PageTable>) -> Ran {
    let case = spec.case();
    let inputs = DecodeInputs::new(&case);
    let s = inputs.shape;
    let problem = gpu::problem_of(&case).expect("problem");
    let kernel = plan::select_kernel(&problem, SMEM_OPTIN).expect("a kernel");
    let launch = match splits {
        None => plan::decode_launch(&problem, &kernel, SMS, BLOCKS_PER_SM),
        Some(n) => plan::decode_launch_with_splits(&problem, &kernel, n, BLOCKS_PER_SM),
    }
    .expect("launch");
    let context = format!("{spec:?} with {} splits", launch.splits);

    let q_host = inputs.q();
    let q = bits_buffer("q", &gpu::encode(&q_host, spec.dtype));
    let table = table.or_else(|| spec.page.map(|p| inputs.page_table(p as usize)));
    let storage = |tensor: KvTensor| match &table {
        None => inputs.contiguous_storage(tensor, 0, s.batch * s.kv_len * inputs.row_elems(tensor)),
        Some(t) => {
            // Only the pages the table names hold data; a longer (padded) row of the table
            // still names a permutation of 0..batch * pages needed.
            let pages = s.batch * s.kv_len.div_ceil(t.page_size);
            inputs.paged_storage(tensor, &squeeze(t, s.kv_len), 0..pages)
        }
    };
    let k = bits_buffer("k", &storage(KvTensor::K));
    let v = (!inputs.mla).then(|| bits_buffer("v", &storage(KvTensor::V)));
    let table_buf = table
        .as_ref()
        .map(|t| Buffer::from_slice("block_table", &t.table).expect("allocate"));
    let o = Buffer::new(s.o_elems() * 2, "o").expect("allocate");
    let lse = Buffer::new(s.lse_elems() * 4, "lse").expect("allocate");
    let partials = (launch.splits > 1).then(|| {
        (
            Buffer::new(launch.partial_o_elems as usize * 4, "o_partial").expect("allocate"),
            Buffer::new(launch.lse_elems as usize * 4, "lse_partial").expect("allocate"),
        )
    });

    let (page_size, max_pages) = table
        .as_ref()
        .map_or((0, 0), |t| (t.page_size as u32, t.pages_per_seq as u32));
    let args = [
        Arg::Buffer(&q),
        Arg::Buffer(&k),
        v.as_ref().map_or(Arg::Buffer(&k), Arg::Buffer),
        table_buf.as_ref().map_or(Arg::Null, Arg::Buffer),
        partials
            .as_ref()
            .map_or(Arg::Null, |(po, _)| Arg::Buffer(po)),
        partials
            .as_ref()
            .map_or(Arg::Buffer(&lse), |(_, pl)| Arg::Buffer(pl)),
        Arg::Buffer(&o),
        Arg::U32(s.batch as u32),
        Arg::U32(s.q_len as u32),
        Arg::U32(s.q_heads as u32),
        Arg::U32(s.kv_heads as u32),
        Arg::U32(s.kv_len as u32),
        Arg::U32(page_size),
        Arg::U32(max_pages),
        Arg::U32(launch.splits),
        Arg::U32(u32::from(spec.causal)),
        Arg::F32(s.softmax_scale),
    ];
    let name = kernel.name(spec.dtype).expect("name");
    let simt = Simt::new().with_schedule(schedule).with_sms(SMS);
    simt.launch(&name, launch.grid, launch.block, launch.shared_bytes, &args)
        .unwrap_or_else(|e| panic!("{name}, {context}: {e}"));
    if let (Some(c), Some((po, pl))) = (launch.combine, &partials) {
        let combine = plan::combine_name(spec.dtype).expect("name");
        let args = [
            Arg::Buffer(po),
            Arg::Buffer(pl),
            Arg::Buffer(&o),
            Arg::Buffer(&lse),
            Arg::U32(s.batch as u32),
            Arg::U32(s.q_heads as u32),
            Arg::U32(s.q_len as u32),
            Arg::U32(s.head_dim_v as u32),
            Arg::U32(launch.splits),
        ];
        simt.launch(&combine, c.grid, c.block, c.shared_bytes, &args)
            .unwrap_or_else(|e| panic!("{combine}, {context}: {e}"));
    }

    let o_all = gpu::decode(&o.read::<u16>(), spec.dtype);
    let lse_all = lse.read::<f32>();
    let (per_o, per_l) = (s.q_len * s.q_heads * s.head_dim_v, s.q_heads * s.q_len);
    let outputs = (0..s.batch)
        .map(|b| SequenceOutput {
            b,
            o: o_all[b * per_o..][..per_o].to_vec(),
            lse: lse_all[b * per_l..][..per_l].to_vec(),
        })
        .collect();
    Ran {
        launch,
        inputs,
        q: q_host,
        outputs,
        partials: partials.map(|(po, pl)| (po.read::<f32>(), pl.read::<f32>())),
    }
}

/// The table with rows cut to the pages the sequence needs (for building storage).
fn squeeze(t: &PageTable, kv_len: usize) -> PageTable {
    let need = kv_len.div_ceil(t.page_size);
    PageTable {
        page_size: t.page_size,
        pages_per_seq: need,
        table: t
            .table
            .chunks(t.pages_per_seq)
            .flat_map(|row| row[..need].iter().copied())
            .collect(),
    }
}

fn assert_matches_oracle(spec: Spec, ran: &Ran) {
    let check = gpu::check_sequences(&ran.inputs, &ran.q, &ran.outputs);
    assert!(
        check.passed,
        "{spec:?}, {} splits: {:?} (max abs {:.2e}; {})",
        ran.launch.splits, check.detail, check.max_abs_err, check.tolerance
    );
}

const SCHEDULES: [Schedule; 3] = [
    Schedule::Parallel,
    Schedule::Serial,
    Schedule::SerialReverse,
];

/// Runs `spec` twice: with the split model's count (on this small GPU usually one tile per
/// split, so the combine does the merging) and with one split (every tile through one
/// block's online softmax, and the split kernel writing O itself).
fn run_both_ways(spec: Spec, schedule: Schedule) {
    for splits in [None, Some(1)] {
        let ran = run(spec, splits, schedule, None);
        assert_eq!(
            ran.launch.tiles,
            spec.kv_len.div_ceil(ran.launch.kernel.kv_tile as u64) as u32
        );
        assert_matches_oracle(spec, &ran);
    }
}

#[test]
fn mha_every_edge_length_matches_the_oracle() {
    // 1 key, one short of a 64-key tile, exactly one, one over, and several tiles.
    for (i, kv_len) in [1u64, 63, 64, 65, 300].into_iter().enumerate() {
        run_both_ways(gqa(1, 2, 2, 64, kv_len), SCHEDULES[i % 3]);
    }
}

#[test]
fn gqa_groups_of_4_8_16_and_40_contiguous_and_paged_match_the_oracle() {
    let specs = [
        // Group 4, d 128: contiguous, and paged with pages of 16 over 300 keys.
        gqa(2, 8, 2, 128, 65),
        gqa(2, 8, 2, 128, 300).paged(16),
        // Group 8, f16, pages of 7 (not dividing the 64-key tile) over 63 keys.
        gqa(1, 8, 1, 128, 63).paged(7).f16(),
        // Group 8, pages as long as a tile, plus one token.
        gqa(2, 16, 2, 64, 129).paged(64),
        // Group 16: one full 16-row tile.
        gqa(1, 16, 1, 64, 100),
        // d 256 (32-key tiles), f16, pages of 32.
        gqa(1, 4, 1, 256, 65).paged(32).f16(),
        // Group 40: three head tiles of one KV head (the last one half empty).
        gqa(1, 40, 1, 64, 70),
    ];
    // Alternately the split model's count and one split (to keep the TSan run short; the
    // MHA test above runs every length both ways).
    for (i, spec) in specs.into_iter().enumerate() {
        let splits = [None, Some(1)][i % 2];
        let ran = run(spec, splits, SCHEDULES[i % 3], None);
        assert_matches_oracle(spec, &ran);
    }
}

#[test]
fn mla_at_deepseek_dims_matches_the_oracle() {
    // 16 heads: 16-row blocks, paged latent cache (pages of 64) over 65 keys (3 tiles of
    // 32) of 2 sequences, in one split: the online softmax over every tile.
    let spec = mla(2, 16, 65).paged(64);
    let ran = run(spec, Some(1), Schedule::Parallel, None);
    assert_eq!(ran.launch.kernel.rows, 16);
    assert_matches_oracle(spec, &ran);
    // 8 heads (half a tile), f16, contiguous, 70 keys: the split model's count.
    let spec = mla(1, 8, 70).f16();
    let ran = run(spec, None, Schedule::Serial, None);
    assert_matches_oracle(spec, &ran);
    // 24 heads: 64-row blocks of 512 threads (40 rows of padding), 100 keys (4 tiles) in 2
    // splits of 2 tiles.
    let spec = mla(1, 24, 100);
    let ran = run(spec, Some(2), Schedule::Parallel, None);
    assert_eq!((ran.launch.kernel.rows, ran.launch.block), (64, 512));
    assert_matches_oracle(spec, &ran);
}

#[test]
fn split_combine_equals_the_unsplit_result() {
    // 300 keys = 5 tiles of 64: 1 split (the split kernel writes O), 2 (3 + 2 tiles), 5
    // (one tile each) and 7 (two splits with no tile: LSE -inf, skipped by the combine).
    let spec = gqa(2, 4, 1, 64, 300).paged(16);
    let one = run(spec, Some(1), Schedule::Parallel, None);
    assert!(one.launch.combine.is_none() && one.partials.is_none());
    assert_matches_oracle(spec, &one);
    let (atol, rtol) = gpu::output_tolerance(spec.dtype, 300);
    for (i, splits) in [2u32, 5, 7].into_iter().enumerate() {
        let ran = run(spec, Some(splits), SCHEDULES[(i + 1) % 3], None);
        assert_matches_oracle(spec, &ran);
        for (a, b) in ran.outputs.iter().zip(&one.outputs) {
            let want: Vec<f64> = b.o.iter().map(|&x| x as f64).collect();
            let c = reference::compare(&a.o, &want, atol, rtol);
            assert!(c.passed(), "{splits} splits vs 1, sequence {}: {c:?}", a.b);
        }
    }
}

#[test]
fn each_partial_is_the_attention_of_its_own_tiles() {
    let spec = gqa(1, 8, 2, 64, 300);
    let ran = run(spec, Some(7), Schedule::Serial, None);
    let (o_p, lse_p) = ran.partials.as_ref().expect("partials");
    let s = ran.inputs.shape;
    let (k, v) = ran.inputs.sequence_kv(0);
    let rows = s.lse_elems();
    let mut empty = 0;
    for split in 0..7u32 {
        let tiles = plan::split_tiles(ran.launch.tiles, 7, split);
        let keys =
            (tiles.start as usize * 64).min(s.kv_len)..(tiles.end as usize * 64).min(s.kv_len);
        let o = &o_p[split as usize * rows * s.head_dim_v..][..rows * s.head_dim_v];
        let lse = &lse_p[split as usize * rows..][..rows];
        if keys.is_empty() {
            empty += 1;
            assert!(
                lse.iter().all(|&x| x == f32::NEG_INFINITY),
                "split {split}: {lse:?}"
            );
            assert!(o.iter().all(|&x| x == 0.0), "split {split}");
            continue;
        }
        // The oracle over exactly this split's keys; partials are head-major
        // [head][d_v] (q_len 1), the oracle's O is BSHD [1][head][d_v]: the same order.
        let sub = AttentionShape {
            batch: 1,
            kv_len: keys.len(),
            ..s
        };
        let row_k = s.kv_heads * s.head_dim_qk;
        let row_v = s.kv_heads * s.head_dim_v;
        let kv = KvSource::Contiguous {
            k: &k[keys.start * row_k..keys.end * row_k],
            v: &v[keys.start * row_v..keys.end * row_v],
        };
        let (want_o, want_lse) = reference::attention_naive_f64(&sub, &ran.q, &kv);
        // Partials are f32 (no output rounding) but P was rounded: the same bound.
        let (atol, rtol) = gpu::output_tolerance(spec.dtype, keys.len());
        let c = reference::compare(o, &want_o, atol, rtol);
        assert!(c.passed(), "split {split} ({keys:?}) O: {c:?}");
        let (atol, rtol) = gpu::lse_tolerance(spec.dtype, keys.len());
        let c = reference::compare(lse, &want_lse, atol, rtol);
        assert!(c.passed(), "split {split} ({keys:?}) LSE: {c:?}");
    }
    assert_eq!(empty, 2, "5 tiles in 7 splits leave 2 empty");
}

#[test]
fn several_query_positions_with_the_causal_mask() {
    // q_len 3 (speculative decoding), causal: position i sees kv_len - 2 + i keys; with
    // kv_len 2 the first position sees none (O = 0, LSE = -inf, as the oracle says).
    for (i, kv_len) in [70u64, 2].into_iter().enumerate() {
        let spec = Spec {
            q_len: 3,
            causal: true,
            ..gqa(2, 8, 2, 64, kv_len)
        };
        for splits in [None, Some(1)] {
            let ran = run(spec, splits, SCHEDULES[i], None);
            assert_matches_oracle(spec, &ran);
        }
    }
}

#[test]
fn block_table_entries_past_the_sequence_are_never_read() {
    // Rows of the block table two entries longer than needed, padded with u32::MAX: a
    // kernel that looked them up would copy from far outside the page pool, which the
    // harness reports as an out-of-bounds cp.async source.
    let spec = gqa(2, 8, 2, 64, 50).paged(16);
    let inputs = DecodeInputs::new(&spec.case());
    let t = inputs.page_table(16);
    let padded = PageTable {
        page_size: 16,
        pages_per_seq: t.pages_per_seq + 2,
        table: t
            .table
            .chunks(t.pages_per_seq)
            .flat_map(|row| row.iter().copied().chain([u32::MAX; 2]))
            .collect(),
    };
    let ran = run(spec, None, Schedule::Parallel, Some(padded));
    assert_matches_oracle(spec, &ran);
}

#[test]
fn the_combine_kernel_is_the_host_combine() {
    // Random partials for 2 x 3 rows of d_v 64 over 4 splits, with -inf splits (whose O
    // holds NaN garbage that must not be read), a row with every split -inf, and a row with
    // a NaN LSE (which must propagate).
    let shape = AttentionShape {
        batch: 2,
        q_len: 1,
        kv_len: 1,
        q_heads: 3,
        kv_heads: 1,
        head_dim_qk: 64,
        head_dim_v: 64,
        causal: false,
        softmax_scale: 1.0,
    };
    let (splits, rows, d) = (4usize, 6usize, 64usize);
    let mut rng = solbench_core::random::SplitMix64::new(0xC0B1);
    let mut o_p: Vec<f32> = rng.fill_f32(splits * rows * d);
    let mut lse_p: Vec<f32> = (0..splits * rows)
        .map(|_| rng.uniform(-3.0, 8.0) as f32)
        .collect();
    for (s, r) in [(1, 0), (3, 0), (0, 2), (2, 5)] {
        lse_p[s * rows + r] = f32::NEG_INFINITY;
        o_p[(s * rows + r) * d..][..d].fill(f32::NAN);
    }
    for s in 0..splits {
        lse_p[s * rows + 4] = f32::NEG_INFINITY;
    }
    lse_p[2 * rows + 3] = f32::NAN;
    let (want_o, want_lse) = reference::combine_splits(&shape, splits, &o_p, &lse_p);
    for dtype in [Dtype::Bf16, Dtype::F16] {
        let po = Buffer::from_slice("o_partial", &o_p).expect("allocate");
        let pl = Buffer::from_slice("lse_partial", &lse_p).expect("allocate");
        let o = Buffer::new(rows * d * 2, "o").expect("allocate");
        let lse = Buffer::new(rows * 4, "lse").expect("allocate");
        let l = plan::combine_launch(rows as u64);
        let args = [
            Arg::Buffer(&po),
            Arg::Buffer(&pl),
            Arg::Buffer(&o),
            Arg::Buffer(&lse),
            Arg::U32(2),
            Arg::U32(3),
            Arg::U32(1),
            Arg::U32(d as u32),
            Arg::U32(splits as u32),
        ];
        let name = plan::combine_name(dtype).expect("name");
        Simt::new()
            .launch(&name, l.grid, l.block, 0, &args)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got_o = gpu::decode(&o.read::<u16>(), dtype);
        let got_lse = lse.read::<f32>();
        let u = gpu::unit_roundoff(dtype) as f32;
        for r in 0..rows {
            let (w, g) = (&want_o[r * d..][..d], &got_o[r * d..][..d]);
            if r == 3 {
                assert!(
                    g.iter().all(|x| x.is_nan()) && got_lse[r].is_nan(),
                    "NaN row"
                );
                continue;
            }
            for (x, y) in g.iter().zip(w) {
                assert!(
                    (x - y).abs() <= u * y.abs() + 1e-6,
                    "{name} row {r}: {x} vs {y}"
                );
            }
            let lse_ok = got_lse[r] == want_lse[r] || (got_lse[r] - want_lse[r]).abs() <= 1e-5;
            assert!(lse_ok, "{name} row {r}: {} vs {}", got_lse[r], want_lse[r]);
        }
        assert_eq!(got_lse[4], f32::NEG_INFINITY);
        assert!(got_o[4 * d..][..d].iter().all(|&x| x == 0.0));
    }
}

#[test]
fn too_little_shared_memory_is_caught() {
    // The launch contract's size is exact: 16 bytes less and the kernel's last region (the
    // key slots) runs into the harness's guard.
    let spec = gqa(1, 4, 1, 64, 10);
    let case = spec.case();
    let inputs = DecodeInputs::new(&case);
    let s = inputs.shape;
    let problem = gpu::problem_of(&case).expect("problem");
    let kernel = plan::select_kernel(&problem, SMEM_OPTIN).expect("kernel");
    let l = plan::decode_launch_with_splits(&problem, &kernel, 1, 1).expect("launch");
    let q = bits_buffer("q", &gpu::encode(&inputs.q(), spec.dtype));
    let k = bits_buffer("k", &inputs.contiguous_storage(KvTensor::K, 0, s.k_elems()));
    let v = bits_buffer("v", &inputs.contiguous_storage(KvTensor::V, 0, s.v_elems()));
    let o = Buffer::new(s.o_elems() * 2, "o").expect("allocate");
    let lse = Buffer::new(s.lse_elems() * 4, "lse").expect("allocate");
    let args = [
        Arg::Buffer(&q),
        Arg::Buffer(&k),
        Arg::Buffer(&v),
        Arg::Null,
        Arg::Null,
        Arg::Buffer(&lse),
        Arg::Buffer(&o),
        Arg::U32(1),
        Arg::U32(1),
        Arg::U32(4),
        Arg::U32(1),
        Arg::U32(10),
        Arg::U32(0),
        Arg::U32(0),
        Arg::U32(1),
        Arg::U32(0),
        Arg::F32(s.softmax_scale),
    ];
    let name = kernel.name(spec.dtype).expect("name");
    Simt::new()
        .launch(&name, l.grid, l.block, l.shared_bytes, &args)
        .expect("the contract's shared memory is enough");
    let err = Simt::new()
        .with_schedule(Schedule::Serial)
        .launch(&name, l.grid, l.block, l.shared_bytes - 16, &args)
        .expect_err("16 bytes short must be caught");
    assert_eq!(err.kind, ErrorKind::Kernel, "{err}");
    assert!(err.message.contains(&name), "{err}");
}
