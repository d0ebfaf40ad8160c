//! Several boxes for one model: which of the language model's layers each box holds when the
//! model is split over RPC workers (`--rpc`), and what that costs each box.
//!
//! llama.cpp places layers by `n_gpu_layers` and `tensor_split` (llama-model.cpp,
//! `load_tensors`): of its `n_layer + 1` layer items (the repeating layers, then the output
//! layer), the first `n_layer + 1 - n_gpu_layers` stay on the CPU and the rest go to the
//! devices in order, each taking the items whose position falls in its slice of the cumulative
//! split. The input layer (token embeddings) always stays on the CPU. [`LayerSplit::new`] turns
//! one share per box (local first) into those two numbers and reproduces the placement, in the
//! same `f32` arithmetic, so that `plan --rpc` says exactly what the load does. The projector
//! always stays local.

use std::ops::RangeInclusive;

use serde::Serialize;

use crate::ffi::rpc::{RpcDevice, WorkerAddr};
use crate::gguf::GgufFile;

/// Where each layer item goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSplit {
    /// Repeating layers of the model.
    pub n_layer: u32,
    /// llama.cpp's `n_gpu_layers`: the layer items placed on the workers.
    pub n_gpu_layers: i32,
    /// llama.cpp's `tensor_split` over the workers' devices.
    pub tensor_split: Vec<f32>,
    /// The box of each layer item (`n_layer + 1` entries, the last is the output layer):
    /// 0 is this machine, 1.. the workers in `--rpc` order.
    pub owner: Vec<usize>,
}

impl LayerSplit {
    /// The split for `shares` (one per box, this machine first; any positive scale, e.g.
    /// `1,1,1` or GB of memory). This machine's items are its share of the `n_layer + 1`, rounded;
    /// the workers share the rest by their shares, as llama.cpp's `tensor_split`.
    pub fn new(n_layer: u32, shares: &[f64]) -> Result<LayerSplit, String> {
        if shares.len() < 2 {
            return Err("a split needs this machine's share and at least one worker's".into());
        }
        if let Some(bad) = shares.iter().find(|s| !s.is_finite() || **s < 0.0) {
            return Err(format!("share {bad} is not a number >= 0"));
        }
        let total: f64 = shares.iter().sum();
        let remote: f64 = shares[1..].iter().sum();
        if remote <= 0.0 {
            return Err("every worker's share is 0: nothing would run on the workers".into());
        }
        let items = n_layer as i64 + 1;
        let local = ((items as f64) * shares[0] / total).round() as i64;
        let n_gpu_layers = (items - local).clamp(0, items) as i32;
        // Normalised (llama.cpp normalises again; the placement below uses these same values).
        let tensor_split: Vec<f32> = shares[1..].iter().map(|&s| (s / total) as f32).collect();
        let owner = place(n_layer, n_gpu_layers, &tensor_split);
        Ok(LayerSplit {
            n_layer,
            n_gpu_layers,
            tensor_split,
            owner,
        })
    }

    /// The repeating layers on box `b`, if any (they are always consecutive).
    pub fn layers_of(&self, b: usize) -> Option<RangeInclusive<u32>> {
        let mine: Vec<u32> = (0..self.n_layer)
            .filter(|&il| self.owner[il as usize] == b)
            .collect();
        Some(*mine.first()?..=*mine.last()?)
    }

    /// The box that holds the output layer (the `lm_head` and final norm).
    pub fn output_box(&self) -> usize {
        self.owner[self.n_layer as usize]
    }
}

/// llama.cpp's placement (llama-model.cpp `load_tensors`, `get_layer_buft_list`), with the
/// CPU as box 0 and device `i` as box `i + 1`.
fn place(n_layer: u32, n_gpu_layers: i32, tensor_split: &[f32]) -> Vec<usize> {
    let n_layer_all = n_layer as i32;
    // sum and normalize the splits to get the split points
    let mut splits: Vec<f32> = Vec::with_capacity(tensor_split.len());
    let mut sum = 0.0f32;
    for &s in tensor_split {
        sum += s;
        splits.push(sum);
    }
    for s in &mut splits {
        *s /= sum;
    }
    let i_gpu_start = (n_layer_all + 1 - n_gpu_layers).max(0);
    let act_gpu_layers = if tensor_split.is_empty() {
        0
    } else {
        n_gpu_layers.min(n_layer_all + 1)
    };
    (0..=n_layer_all)
        .map(|il| {
            if il < i_gpu_start || (il - i_gpu_start) >= act_gpu_layers {
                return 0;
            }
            let x = (il - i_gpu_start) as f32 / act_gpu_layers as f32;
            // std::upper_bound: the first split point greater than x.
            1 + splits
                .iter()
                .take_while(|&&p| p <= x)
                .count()
                .min(splits.len() - 1)
        })
        .collect()
}

/// What one box holds and needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoxShare {
    /// `local` or the worker's `host:port`.
    pub name: String,
    /// ggml's device name (`CPU`, `RPC0`, ...), as in llama.cpp's log and `--json` of a run.
    pub device: String,
    /// Repeating layers held (first and last), if any.
    pub layers: Option<(u32, u32)>,
    /// How many repeating layers.
    pub n_layers: u32,
    /// Whether it holds the output layer.
    pub output: bool,
    /// Weight bytes, from the GGUF tensor table.
    pub weights: u64,
    /// KV cache bytes (its layers' part of the whole cache).
    pub kv_cache: u64,
    /// Compute buffers (llama.cpp's estimate for this split).
    pub compute: u64,
    /// The projector and the images' working memory (this machine only).
    pub projector: u64,
    /// All of the above.
    pub total: u64,
    /// Memory the box has: available now (this machine) or reported by the worker.
    pub memory: Option<u64>,
    /// Whether `total` fits in `memory`.
    pub fits: Option<bool>,
}

/// Weight bytes of each layer item and of the input layer, from the tensor table:
/// `blk.N.*` are layer N; `output.weight` and `output_norm.weight` are the output item (a
/// model without `output.weight` reuses the token embeddings there, which llama.cpp then
/// duplicates onto the output's box); everything else is input (token embeddings) and stays
/// local.
pub fn layer_weights(model: &GgufFile, n_layer: u32) -> (Vec<u64>, u64) {
    let mut items = vec![0u64; n_layer as usize + 1];
    let mut input = 0u64;
    for t in &model.tensors {
        let layer = t
            .name
            .strip_prefix("blk.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < n_layer as usize);
        match (layer, t.name.as_str()) {
            (Some(n), _) => items[n] += t.n_bytes,
            (None, "output.weight" | "output_norm.weight") => items[n_layer as usize] += t.n_bytes,
            _ => input += t.n_bytes,
        }
    }
    if model.tensor("output.weight").is_none() {
        if let Some(embd) = model.tensor("token_embd.weight") {
            items[n_layer as usize] += embd.n_bytes;
        }
    }
    (items, input)
}

/// Each box's share: this machine first, then one per worker device. `kv_total` is llama.cpp's
/// KV cache estimate for the whole model; `compute` each box's compute buffers; `local_extra`
/// what only this machine holds (projector, images). `memory` is each box's memory, same order.
pub fn box_shares(
    split: &LayerSplit,
    model: &GgufFile,
    names: &[(String, String)],
    kv_total: u64,
    compute: &[u64],
    local_extra: u64,
    memory: &[Option<u64>],
) -> Vec<BoxShare> {
    let (items, input) = layer_weights(model, split.n_layer);
    let kv_per_layer = kv_total / u64::from(split.n_layer.max(1));
    names
        .iter()
        .enumerate()
        .map(|(b, (name, device))| {
            let layers = split.layers_of(b);
            let n_layers = layers.as_ref().map_or(0, |r| r.end() - r.start() + 1);
            let output = split.output_box() == b;
            let mut weights: u64 = split
                .owner
                .iter()
                .zip(&items)
                .filter(|(o, _)| **o == b)
                .map(|(_, w)| w)
                .sum();
            let mut projector = 0;
            if b == 0 {
                weights += input;
                projector = local_extra;
            }
            let kv_cache = kv_per_layer * u64::from(n_layers);
            let compute = compute.get(b).copied().unwrap_or(0);
            let total = weights + kv_cache + compute + projector;
            let mem = memory.get(b).copied().flatten();
            BoxShare {
                name: name.clone(),
                device: device.clone(),
                layers: layers.map(|r| (*r.start(), *r.end())),
                n_layers,
                output,
                weights,
                kv_cache,
                compute,
                projector,
                total,
                memory: mem,
                fits: mem.map(|m| total <= m),
            }
        })
        .collect()
}

/// The workers, connected, and the split of the model over them.
#[derive(Debug)]
pub struct Placement {
    /// Which box holds which layer.
    pub split: LayerSplit,
    /// What the model load takes ([`crate::ffi::LoadParams::offload`]).
    pub offload: &'static crate::ffi::rpc::Offload,
    /// The shares used (this machine first).
    pub shares: Vec<f64>,
}

/// Default shares: by memory, as llama.cpp splits by free device memory; this machine counts
/// with its available memory.
pub fn default_shares(local_available: u64, workers: &[RpcDevice]) -> Vec<f64> {
    std::iter::once(local_available as f64)
        .chain(workers.iter().map(|d| d.memory.free as f64))
        .collect()
}

/// Why the model could not be split over the workers.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// The language model file could not be read.
    #[error("{0}")]
    Model(String),
    /// A worker could not be reached or used (the message names it).
    #[error(transparent)]
    Worker(#[from] crate::ffi::rpc::RpcError),
    /// The shares (`--rpc-split`) do not fit the workers.
    #[error("--rpc-split: {0}")]
    Shares(String),
}

/// Connects to the workers and splits the model at `model_path` over this machine and them:
/// by `shares` (one per box, this machine first) when given, else by memory.
pub fn connect(
    model_path: &std::path::Path,
    workers: &[WorkerAddr],
    shares: Option<&[f64]>,
) -> Result<Placement, SplitError> {
    let model = GgufFile::open(model_path).map_err(|e| SplitError::Model(e.to_string()))?;
    let n_layer = n_layer_of(&model).map_err(SplitError::Model)?;
    let devices = crate::ffi::rpc::connect(workers)?;
    let shares = match shares {
        Some(s) => {
            if s.len() != devices.len() + 1 {
                return Err(SplitError::Shares(format!(
                    "{} shares given; {} needed (this machine, then one per worker device)",
                    s.len(),
                    devices.len() + 1
                )));
            }
            s.to_vec()
        }
        None => {
            let local = crate::plan::system::available_memory().map_or(0, |a| a.bytes);
            default_shares(local, &devices)
        }
    };
    let split = LayerSplit::new(n_layer, &shares).map_err(SplitError::Shares)?;
    let offload =
        crate::ffi::rpc::Offload::leak(devices, split.n_gpu_layers, split.tensor_split.clone());
    Ok(Placement {
        split,
        offload,
        shares,
    })
}

/// `plan --rpc`: the split and each box's share, with each box's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct RpcPlan {
    /// Shares used, this machine first.
    pub shares: Vec<f64>,
    /// Whether the shares are the boxes' memory (no `--rpc-split`).
    pub by_memory: bool,
    /// Which box holds which layer.
    pub split: LayerSplit,
    /// This machine, then one per worker device.
    pub boxes: Vec<BoxShare>,
    /// Whether every box fits.
    pub fits: bool,
}

/// Plans a split without loading any weights: connects to the workers (their memory, and the
/// buffer sizes llama.cpp asks them for; no weights are sent), places the layers by `shares`
/// (else by memory) and shares the planned footprint out per box. Weights and KV cache come
/// from the tensor table and the placement (what each box holds resident); compute buffers
/// from llama.cpp's own estimate of this split, which has a buffer per device (and, when every
/// layer is on the workers, llama.cpp's pipeline-parallel copies of them).
pub fn plan_rpc(
    plan: &crate::plan::memory::MemPlan,
    workers: &[WorkerAddr],
    shares: Option<&[f64]>,
) -> Result<RpcPlan, SplitError> {
    let shares_given = shares;
    let model = GgufFile::open(&plan.model).map_err(|e| SplitError::Model(e.to_string()))?;
    let n_layer = n_layer_of(&model).map_err(SplitError::Model)?;
    let devices = crate::ffi::rpc::connect(workers)?;
    let local_memory = plan.available.as_ref().map(|a| a.bytes);
    let shares = match shares {
        Some(s) if s.len() != devices.len() + 1 => {
            return Err(SplitError::Shares(format!(
                "{} shares given; {} needed (this machine, then one per worker device)",
                s.len(),
                devices.len() + 1
            )))
        }
        Some(s) => s.to_vec(),
        None => default_shares(local_memory.unwrap_or(0), &devices),
    };
    let split = LayerSplit::new(n_layer, &shares).map_err(SplitError::Shares)?;
    let mut names = vec![("local".to_string(), "CPU".to_string())];
    let mut memory = vec![local_memory];
    for d in &devices {
        names.push((d.addr.to_string(), d.name.clone()));
        memory.push(Some(d.memory.free));
    }
    let offload =
        crate::ffi::rpc::Offload::leak(devices, split.n_gpu_layers, split.tensor_split.clone());
    let s = &plan.prediction.settings;
    let estimate = crate::ffi::llama_memory_estimate_devices(
        &plan.model,
        s.n_ctx,
        s.n_batch.min(s.n_ctx),
        s.kv_type,
        plan.footprint.repack.repack,
        s.n_threads,
        offload,
    )
    .map_err(SplitError::Model)?;
    let fp = &plan.footprint;
    let local_extra = fp.projector_weights
        + fp.projector_compute
        + fp.image_embeddings
        + fp.runtime
        + fp.text_metadata;
    let compute: Vec<u64> = names
        .iter()
        .map(|(_, device)| {
            estimate
                .iter()
                .filter(|d| &d.name == device)
                .map(|d| d.compute)
                .sum()
        })
        .collect();
    let boxes = box_shares(
        &split,
        &model,
        &names,
        fp.kv_cache,
        &compute,
        local_extra,
        &memory,
    );
    let fits = boxes.iter().all(|b| b.fits != Some(false));
    Ok(RpcPlan {
        by_memory: shares_given.is_none(),
        shares,
        split,
        boxes,
        fits,
    })
}

/// `<arch>.block_count` of a language model.
pub fn n_layer_of(model: &GgufFile) -> Result<u32, String> {
    let arch = model.architecture().unwrap_or("llama");
    model
        .get_u64(&format!("{arch}.block_count"))
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!(
                "{}: no {arch}.block_count: not a language model GGUF",
                model.path.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden placements, worked by hand from llama-model.cpp `load_tensors` (llama.cpp bundled
    /// in llama-cpp-sys-2 0.1.161): split points are the normalised cumulative shares, item
    /// `il` of the offloaded ones goes to the first device whose split point exceeds
    /// `il / act_gpu_layers`.
    #[test]
    fn placement_matches_llama_cpp() {
        // 2.6 (28 layers) 50/50 over two workers, nothing local: 29 items, points [0.5, 1].
        // Item 14: 14/29 = 0.483 -> worker 1; item 15: 0.517 -> worker 2, which also holds
        // the output.
        let s = LayerSplit::new(28, &[0.0, 1.0, 1.0]).unwrap();
        assert_eq!(s.n_gpu_layers, 29);
        assert_eq!(s.layers_of(0), None);
        assert_eq!(s.layers_of(1), Some(0..=14));
        assert_eq!(s.layers_of(2), Some(15..=27));
        assert_eq!(s.output_box(), 2);

        // Thirds: 29 * 1/3 = 9.67 -> 10 items local (layers 0..=9); 19 on the workers with
        // points [0.5, 1]: items 0..=9 (9/19 = 0.47) on worker 1, the rest and the output on 2.
        let s = LayerSplit::new(28, &[1.0, 1.0, 1.0]).unwrap();
        assert_eq!(s.n_gpu_layers, 19);
        assert_eq!(s.layers_of(0), Some(0..=9));
        assert_eq!(s.layers_of(1), Some(10..=19));
        assert_eq!(s.layers_of(2), Some(20..=27));
        assert_eq!(s.output_box(), 2);

        // Local 3 : worker 1 (a 16 GB box and a 4 GB Pi, 32 layers as Llama3-V 2.5):
        // 33 * 0.75 = 24.75 -> 25 local (layers 0..=24), 8 items remote: 7 layers and output.
        let s = LayerSplit::new(32, &[12.0, 4.0]).unwrap();
        assert_eq!((s.n_gpu_layers, s.tensor_split.clone()), (8, vec![0.25]));
        assert_eq!(s.layers_of(0), Some(0..=24));
        assert_eq!(s.layers_of(1), Some(25..=31));
        assert_eq!(s.output_box(), 1);

        // A tiny last share gets no layers: points [0.990, 1] and items at 0, 1/3, 2/3.
        let s = LayerSplit::new(4, &[1.0, 1.0, 0.01]).unwrap();
        assert_eq!(s.layers_of(1), Some(2..=3));
        assert_eq!(s.layers_of(2), None);
        assert_eq!(s.output_box(), 1);
        assert_eq!(s.owner.len(), 5);
    }

    #[test]
    fn bad_shares_are_refused_with_the_reason() {
        assert!(LayerSplit::new(28, &[1.0])
            .unwrap_err()
            .contains("at least one worker"));
        assert!(LayerSplit::new(28, &[1.0, 0.0])
            .unwrap_err()
            .contains("share is 0"));
        assert!(LayerSplit::new(28, &[1.0, -1.0])
            .unwrap_err()
            .contains(">= 0"));
        assert!(LayerSplit::new(28, &[1.0, f64::NAN])
            .unwrap_err()
            .contains(">= 0"));
    }
}
