#!/usr/bin/env python3
"""A faithful numpy/scipy re-statement of the MoEITS authors' NMI routine (methods.md §2.1–2.2:
`compute_information_measures` as called from `_calculate_NMI_experts`): for every expert pair and
projection, flatten both weight matrices, bin each with numpy 'auto' edges, build density histograms and
the 2-D histogram on the marginal edges, entropies with scipy (natural log), NMI = I / sqrt(H_A H_B).
Like the original it recomputes both marginal histograms inside every pair call.

Times one MoE layer of a model and prints its NMI matrix's row means (for comparison with MoEPress's plan).
With PAIRS, only the first PAIRS expert pairs are timed and the layer's time is extrapolated to all
E(E-1)/2 pairs (every pair costs the same: same matrix sizes), for real-size layers where the full routine
takes hours; row means are then not printed. Reads single files and sharded checkpoints (bf16 or f32).
Usage: python3 tools/moeits_reference.py MODEL_DIR [LAYER] [PAIRS]"""
import json, sys, time
import numpy as np
from scipy.stats import entropy
from safetensors.numpy import load_file


def nmi(a, b):
    a = a.astype(np.float32).ravel()
    b = b.astype(np.float32).ravel()
    ha, ea = np.histogram(a, bins="auto", density=True)
    hb, eb = np.histogram(b, bins="auto", density=True)
    hab, _, _ = np.histogram2d(a, b, bins=[ea, eb], density=True)
    pa, pb, pab = ha / ha.sum(), hb / hb.sum(), hab / hab.sum()
    h_a, h_b, h_ab = entropy(pa), entropy(pb), entropy(pab.ravel())
    return (h_a + h_b - h_ab) / np.sqrt(h_a * h_b)


def main():
    model, layer = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0
    sample = int(sys.argv[3]) if len(sys.argv) > 3 else None
    cfg = json.load(open(f"{model}/config.json"))
    import os, struct
    try:
        files = sorted(set(json.load(open(f"{model}/model.safetensors.index.json"))["weight_map"].values()))
    except FileNotFoundError:
        files = ["model.safetensors"]
    where = {}
    for f in files:
        raw = open(f"{model}/{f}", "rb")
        n = struct.unpack("<Q", raw.read(8))[0]
        for k, v in json.loads(raw.read(n)).items():
            if k != "__metadata__":
                where[k] = (raw, 8 + n, v)
    header = where
    def tensor(name):
        raw, start, h = where[name]
        raw.seek(start + h["data_offsets"][0])
        data = raw.read(h["data_offsets"][1] - h["data_offsets"][0])
        if h["dtype"] == "F32":
            return np.frombuffer(data, dtype=np.float32).reshape(h["shape"])
        # bf16 → f32 by hand (numpy has no bf16)
        buf = np.frombuffer(data, dtype=np.uint16)
        return (buf.astype(np.uint32) << 16).view(np.float32).reshape(h["shape"])
    mixtral = "block_sparse_moe" in json.dumps(list(header))
    e = cfg.get("num_local_experts", cfg.get("num_experts"))
    if mixtral:
        names, weights = ["w1", "w3", "w2"], [1 / 3, 1 / 3, 1 / 3]
        path = lambda j, p: f"model.layers.{layer}.block_sparse_moe.experts.{j}.{p}.weight"
    else:
        names, weights = ["gate_proj", "up_proj", "down_proj"], [0.2, 0.4, 0.4]
        path = lambda j, p: f"model.layers.{layer}.mlp.experts.{j}.{p}.weight"
    pairs = [(i, j) for i in range(e) for j in range(i + 1, e)]
    timed = pairs[:sample] if sample else pairs
    used = sorted({x for p in timed for x in p})
    W = {(j, p): tensor(path(j, p)) for j in used for p in names}
    start = time.perf_counter()
    M = np.zeros((e, e))
    for i, j in timed:
        M[i, j] = M[j, i] = sum(c * nmi(W[(i, p)], W[(j, p)]) for c, p in zip(weights, names))
    secs = (time.perf_counter() - start) * len(pairs) / len(timed)
    out = {"model": model, "layer": layer, "experts": e, "seconds": secs, "pairs_timed": len(timed), "pairs": len(pairs)}
    if len(timed) == len(pairs):
        out["row_mean"] = M.mean(axis=1).tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
