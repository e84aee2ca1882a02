import Foundation
import Testing
import MoETensor
import MoECheckpoint
import MoEModels
@testable import MoECompression

@Suite struct LowRankTests {
    func random(_ m: Int, _ n: Int, seed: UInt64) -> Tensor {
        var g = SeededGenerator(seed: seed)
        return Tensor(shape: [m, n], values: (0..<(m * n)).map { _ in Float(g.nextUnit() * 2 - 1) })
    }

    @Test func factorsReconstructExactlyAtFullRank() throws {
        for (m, n) in [(7, 5), (5, 7), (16, 16)] {
            let w = random(m, n, seed: UInt64(m * n))
            let (a, b) = try LowRank.svdFactors(w, rank: min(m, n))
            #expect(matmul(a, b).maxAbsDifference(w) < 1e-5)
        }
        // A rank-2 matrix is exact at rank 2.
        let w2 = matmul(random(9, 2, seed: 1), random(2, 6, seed: 2))
        let (a, b) = try LowRank.svdFactors(w2, rank: 2)
        #expect(a.shape == [9, 2] && b.shape == [2, 6])
        #expect(matmul(a, b).maxAbsDifference(w2) < 1e-5)
        // ⌊ρ·m·n/(m+n)⌋: 0.5·512·256/768 = 85.33 → 85.
        #expect(LowRank.rank(keep: 0.5, m: 512, n: 256) == 85)
        #expect(LowRank.rank(keep: 1, m: 7, n: 5) == 2 && LowRank.rank(keep: 0.01, m: 7, n: 5) == 1)
    }

    /// The decomposed model (experts run as two skinny GEMMs) equals the same model with each factor pair
    /// multiplied back into a dense matrix; a lower kept ratio moves the logits further from the original.
    @Test func decomposedRuntimeMatchesDenseProduct() throws {
        let src = Where.fixture("qwen2_moe")
        let original = try ModelRegistry.load(directory: src)
        let ids = [[3, 17, 42, 5, 88, 61, 7, 19, 33]]
        let base = original.forward(ids)
        var drift: [Double] = []
        for rho in [0.9, 0.4] {
            let out = Where.temp("lowrank")
            defer { try? FileManager.default.removeItem(at: out) }
            let report = try LowRank.decompose(model: src, options: .keeping(rho), output: out, quiet: true)
            #expect(report.parametersAfter < report.parametersBefore)
            let m = try ModelRegistry.load(directory: out)
            let got = m.forward(ids)
            let dense = try ModelRegistry.load(directory: out)
            for l in dense.description.moeLayerIndices {
                var block = dense.layers[l].feedForward.moe!
                block.experts = block.experts.map { e in
                    func d(_ x: any LinearLayer) -> any LinearLayer {
                        let lr = x as! LowRankLinear
                        return DenseLinear(weight: lr.denseWeight())
                    }
                    return GatedMLP(gate: d(e.gate), up: d(e.up), down: d(e.down), activation: e.activation)
                }
                dense.layers[l].feedForward = .moe(block)
            }
            #expect(got.maxAbsDifference(dense.forward(ids)) < 1e-4)
            drift.append(Double(got.maxAbsDifference(base)))
            #expect(m.parameterCount < original.parameterCount)
        }
        #expect(drift[0] < drift[1])
    }
}

extension LowRank.Options {
    static func keeping(_ rho: Double, _ allocation: LowRank.Allocation = .uniform) -> Self {
        var o = Self()
        o.method = .svd
        o.target = .keep(rho)
        o.allocation = allocation
        return o
    }
}

@Suite struct RankAllocationTests {
    @Test func allocationSpendsTheBudgetExactly() {
        var g = SeededGenerator(seed: 5)
        for trial in 0..<200 {
            let n = 1 + Int(g.next() % 40)
            let cap = 1 + Int(g.next() % 300)
            let budget = n + Int(g.next() % UInt64(n * cap))
            let w = (0..<n).map { _ in pow(g.nextUnit() * 1000 + 1e-8, 0.15) * (trial % 7 == 0 ? 50 : 1) }
            let r = LowRank.allocate(budget: budget, weights: w, cap: cap)
            #expect(r.reduce(0, +) == min(budget, cap * n), "trial \(trial)")
            #expect(r.allSatisfy { $0 >= 1 && $0 <= cap })
            // Heavier experts never get less.
            for i in 0..<n { for j in 0..<n where w[i] > w[j] { #expect(r[i] >= r[j]) } }
        }
        // Equal weights: equal shares; the remainder goes to the lowest indices.
        #expect(LowRank.allocate(budget: 10, weights: [1, 1, 1], cap: 8) == [4, 3, 3])
        // A dominant expert is clamped at the cap and its excess shared by the others.
        #expect(LowRank.allocate(budget: 40, weights: [1000, 1, 1, 1], cap: 12) == [12, 10, 9, 9])
    }

    /// methods.md §3.8: with α = 0.15 a 10× more important expert gets 10^0.15 ≈ 1.41× the rank, and the
    /// layer's total is R_a × experts.
    @Test func importanceWeightsAreGentle() {
        var o = LowRank.Options.keeping(0.5, .importance)
        let m = 512, n = 256
        let average = LowRank.rank(keep: 0.5, m: m, n: n)   // 85
        let r = LowRank.ranks(o, importance: [10, 1], count: 2, m: m, n: n)
        #expect(r.reduce(0, +) == 2 * average)
        #expect(abs(Double(r[0]) / Double(r[1]) - pow(10, 0.15)) < 0.02)
        o.allocation = .uniform
        #expect(LowRank.ranks(o, importance: [10, 1], count: 2, m: m, n: n) == [average, average])
        o.target = .rank(1000)
        #expect(LowRank.ranks(o, importance: nil, count: 3, m: m, n: n) == [256, 256, 256])
    }
}

/// Checkpoint-level behaviour: the fused expert layout, importance ranks in the runtime, `export --dense`
/// and the files HF needs to load factors.
@Suite struct LowRankCheckpointTests {
    /// gpt-oss stores its experts only fused (interleaved [E, H, 2I] with biases, or MXFP4): decomposition writes
    /// MoEPress's per-expert modules (factors and biases, unquantised), at full rank the model is unchanged, and
    /// `export --dense` gathers the products back into the fused tensors stock HF reads.
    @Test(arguments: ["gpt_oss", "gpt_oss_mxfp4"])
    func fusedOnlyFamilyDecomposesPerExpertAndFusesBack(_ name: String) throws {
        let src = Where.fixture(name)
        let out = Where.temp("gptoss-lr"), dense = Where.temp("gptoss-dense")
        defer { for u in [out, dense] { try? FileManager.default.removeItem(at: u) } }
        var o = LowRank.Options.keeping(1)
        o.target = .rank(10_000)
        o.method = .svd
        let report = try LowRank.decompose(model: src, options: o, output: out, quiet: true)
        #expect(report.relativeError.values.allSatisfy { $0 < 1e-5 })
        let ck = try Checkpoint(directory: out)
        #expect(!ck.names.contains { $0.contains("gate_up_proj") || $0.hasSuffix("experts.down_proj") || $0.hasSuffix("_scales") })
        #expect(ck.contains("model.layers.1.mlp.experts.3.up_proj.lowrank_b") && ck.contains("model.layers.1.mlp.experts.3.up_proj.bias"))
        #expect(!(try String(contentsOf: out.appendingPathComponent("config.json"), encoding: .utf8)).contains("quantization_config"))
        let ids = [[3, 17, 42, 5, 88, 61, 7, 19, 33]]
        let want = try ModelRegistry.load(directory: src).forward(ids)
        #expect(try ModelRegistry.load(directory: out).forward(ids).maxAbsDifference(want) < 1e-4)
        #expect(try LowRank.densify(model: out, output: dense) == 24)
        let dk = try Checkpoint(directory: dense)
        #expect(dk.contains("model.layers.0.mlp.experts.gate_up_proj") && dk.contains("model.layers.0.mlp.experts.down_proj_bias"))
        #expect(!dk.names.contains { $0.contains(".experts.0.") })
        #expect(try ModelRegistry.load(directory: dense).forward(ids).maxAbsDifference(want) < 1e-4)
    }

    /// OLMoE's fixture stores experts fused ([E, 2I, H]); decomposition writes them per expert, and at full rank
    /// the model is unchanged.
    @Test func fusedLayoutAtFullRankIsLossless() throws {
        let src = Where.fixture("olmoe")
        #expect(try Checkpoint(directory: src).names.contains { $0.hasSuffix("experts.gate_up_proj") })
        let out = Where.temp("fused")
        defer { try? FileManager.default.removeItem(at: out) }
        var o = LowRank.Options.keeping(1)
        o.target = .rank(10_000)
        let report = try LowRank.decompose(model: src, options: o, output: out, quiet: true)
        #expect(report.relativeError.values.allSatisfy { $0 < 1e-5 })
        let ck = try Checkpoint(directory: out)
        #expect(!ck.names.contains { $0.contains("gate_up_proj") || $0.hasSuffix("experts.down_proj") })
        #expect(ck.contains("model.layers.0.mlp.experts.3.up_proj.lowrank_b"))
        let ids = [[3, 17, 42, 5, 88, 61, 7, 19, 33]]
        #expect(try ModelRegistry.load(directory: out).forward(ids).maxAbsDifference(ModelRegistry.load(directory: src).forward(ids)) < 1e-4)
        // Only gate decomposed: up and down are written per expert as dense weights.
        o.targets = ["gate"]
        o.target = .rank(2)
        let partial = Where.temp("fused-gate")
        defer { try? FileManager.default.removeItem(at: partial) }
        _ = try LowRank.decompose(model: src, options: o, output: partial, quiet: true)
        let pc = try Checkpoint(directory: partial)
        #expect(pc.contains("model.layers.0.mlp.experts.3.up_proj.weight") && pc.contains("model.layers.0.mlp.experts.3.gate_proj.lowrank_a"))
        #expect(try ModelRegistry.load(directory: partial).layers[0].feedForward.moe!.experts[3].up is DenseLinear)
    }

    /// Importance ranks differ per expert; the runtime runs the mixed ranks, and `export --dense` multiplies them
    /// back into a stock checkpoint with the same function.
    @Test func mixedRanksAndDenseExport() throws {
        let src = Where.fixture("qwen2_moe")
        let d = try ModelRegistry.describe(directory: src)
        var importance: [Int: [Double]] = [:]
        for l in d.moeLayerIndices { importance[l] = (0..<d.layers[l].experts!).map { pow(10, Double($0)) } }
        let out = Where.temp("mixed"), dense = Where.temp("dense")
        defer { for u in [out, dense] { try? FileManager.default.removeItem(at: u) } }
        let report = try LowRank.decompose(model: src, options: .keeping(0.5, .importance), importance: importance, output: out, quiet: true)
        let gateRanks = try #require(report.layers.first?.ranks["gate"])
        #expect(Set(gateRanks).count > 1 && gateRanks == gateRanks.sorted())
        let text = try String(contentsOf: out.appendingPathComponent("config.json"), encoding: .utf8)
        #expect(text.contains("\"auto_map\": {\"AutoModelForCausalLM\": \"modeling_moepress.MoEPressForCausalLM\"}"))
        #expect(text.contains("\"allocation\": \"importance\"") && text.contains("\"alpha\": 0.15"))
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("modeling_moepress.py").path))
        let ids = [[3, 17, 42, 5, 88, 61, 7, 19, 33]]
        let lowRank = try ModelRegistry.load(directory: out)
        let ranks = lowRank.layers[0].feedForward.moe!.experts.map { ($0.gate as! LowRankLinear).a.shape[1] }
        #expect(ranks == gateRanks)
        #expect(try LowRank.densify(model: out, output: dense) == report.matrices)
        let denseText = try String(contentsOf: dense.appendingPathComponent("config.json"), encoding: .utf8)
        #expect(!denseText.contains("auto_map") && !denseText.contains("low_rank") && !denseText.contains("moepress"))
        #expect(try !Checkpoint(directory: dense).names.contains { $0.contains("lowrank") })
        #expect(try ModelRegistry.load(directory: dense).forward(ids).maxAbsDifference(lowRank.forward(ids)) < 1e-4)
        // No importance for the importance allocation: a clear error.
        #expect(throws: PruningError.self) { try LowRank.decompose(model: src, options: .keeping(0.5, .importance), output: Where.temp("x"), quiet: true) }
    }
}

@Suite struct SVDLLMTests {
    func random(_ m: Int, _ n: Int, seed: UInt64, scale: (Int) -> Float = { _ in 1 }) -> Tensor {
        var g = SeededGenerator(seed: seed)
        return Tensor(shape: [m, n], values: (0..<(m * n)).map { Float(g.nextUnit() * 2 - 1) * scale($0 % n) })
    }

    func gram(_ x: Tensor) -> [Double] {
        let t = x.rows, n = x.cols
        var g = [Double](repeating: 0, count: n * n)
        for r in 0..<t { for i in 0..<n { for j in 0..<n { g[i * n + j] += Double(x.data[r * n + i]) * Double(x.data[r * n + j]) } } }
        return g
    }

    /// ‖ΔW·Xᵀ‖_F over the tokens x (rows of X).
    func inputError(_ w: Tensor, _ a: Tensor, _ b: Tensor, _ x: Tensor) -> Double {
        let d = matmul(a, b)
        for i in 0..<d.count { d.data[i] = w.data[i] - d.data[i] }
        let e = matmul(x, d, transposeB: true)
        return e.array.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    }

    @Test func whiteningIdentityAndBeatsPlainSVD() throws {
        let m = 12, n = 10, r = 4
        let w = random(m, n, seed: 1)
        // Anisotropic inputs: some dimensions carry far more energy.
        let x = random(200, n, seed: 2) { j in j < 3 ? 5 : 0.3 }
        let g = gram(x)
        let (a, b, jittered) = try LowRank.svdLLMFactors(w, gram: g, rank: r)
        #expect(!jittered)
        // Identity: the error on the inputs equals the whitened error ‖ΔW·S‖_F.
        var s = g
        try LinearAlgebra.cholesky64(&s, n: n)
        let d = matmul(a, b)
        var ws = 0.0
        for i in 0..<m { for j in 0..<n {
            var acc = 0.0
            for k in 0..<n { acc += Double(w.data[i * n + k] - d.data[i * n + k]) * s[k * n + j] }
            ws += acc * acc
        } }
        let viaInputs = inputError(w, a, b, x)
        #expect(abs(viaInputs - ws.squareRoot()) <= 1e-4 * viaInputs)
        // At equal rank, SVD-LLM's error on the inputs beats plain SVD's.
        let (pa, pb) = try LowRank.svdFactors(w, rank: r)
        #expect(viaInputs < 0.9 * inputError(w, pa, pb, x))
    }

    @Test func singularAndEmptyGramStillWork() throws {
        let w = random(8, 6, seed: 3)
        // Fewer tokens than dimensions: G is singular, Cholesky fails, jitter rescues it.
        let few = random(3, 6, seed: 4)
        let (a, b, jittered) = try LowRank.svdLLMFactors(w, gram: gram(few), rank: 3)
        #expect(jittered)
        #expect(a.array.allSatisfy(\.isFinite) && b.array.allSatisfy(\.isFinite))
        // No tokens at all: the result is plain SVD's.
        let (za, zb, _) = try LowRank.svdLLMFactors(w, gram: [Double](repeating: 0, count: 36), rank: 3)
        let (pa, pb) = try LowRank.svdFactors(w, rank: 3)
        #expect(matmul(za, zb).maxAbsDifference(matmul(pa, pb)) < 1e-3)
    }
}

/// Pruning and decomposition compose in either order: both record themselves in config.json's "moepress"
/// section, and the result loads and runs.
@Suite struct ChainedCompressionTests {
    @Test func pruneThenDecomposeAndBack() throws {
        let src = Where.fixture("qwen2_moe")
        let plan = PruningPlan(method: "t", model: "q", parameters: [:],
                               layers: [.init(layer: 0, experts: 6, kept: [0, 1, 2, 3], scores: [:]), .init(layer: 2, experts: 6, kept: [1, 3, 5], scores: [:])])
        let pruned = Where.temp("p"), both = Where.temp("pd"), again = Where.temp("pdp")
        defer { for u in [pruned, both, again] { try? FileManager.default.removeItem(at: u) } }
        try PlanApplier.apply(plan, model: src, output: pruned)
        // Unequal counts: HF loads the folder through the remote code (checked against HF in tools/oracle).
        #expect(FileManager.default.fileExists(atPath: pruned.appendingPathComponent("modeling_moepress.py").path))
        #expect(try String(contentsOf: pruned.appendingPathComponent("config.json"), encoding: .utf8).contains("\"auto_map\""))
        _ = try LowRank.decompose(model: pruned, options: .keeping(0.5), output: both, quiet: true)
        let config = try HFConfig(modelDirectory: both)
        let section = try #require(config.raw["moepress"]?.object)
        #expect(section["experts_per_layer"]?.array?.count == 3 && section["low_rank"]?.object?["method"]?.string == "svd")
        #expect(FileManager.default.fileExists(atPath: both.appendingPathComponent("plan.json").path))
        let d = try ModelRegistry.describe(directory: both)
        #expect(d.layers.map(\.experts) == [4, nil, 3])
        // Prune the decomposed model once more, uniformly: the factors follow their experts.
        let plan2 = PruningPlan(method: "t", model: "q", parameters: [:],
                                layers: [.init(layer: 0, experts: 4, kept: [0, 2, 3], scores: [:]), .init(layer: 2, experts: 3, kept: [0, 1, 2], scores: [:])])
        try PlanApplier.apply(plan2, model: both, output: again)
        let m = try ModelRegistry.load(directory: again)
        #expect(m.description.layers.map(\.experts) == [3, nil, 3])
        #expect(m.layers[0].feedForward.moe!.experts[0].gate is LowRankLinear)
        #expect(m.forward([[1, 2, 3]]).shape == [3, 96])
        let text = try String(contentsOf: again.appendingPathComponent("config.json"), encoding: .utf8)
        #expect(text.contains("\"low_rank\": {\"method\": \"svd\"") && text.contains("\"experts_per_layer\": null"))
    }
}

/// `export --gguf`: the file's structure as llama.cpp's loader reads it (keys and their types, tensor names, shapes
/// innermost-first, aligned sequential offsets), the values in place (embedding rows, q rows permuted to llama.cpp's
/// adjacent-pair rotation, stacked experts with the expert outermost), the tokenizer metadata (SentencePiece scores
/// −merge rank, byte and control token types; byte-level merges and the GPT-2 split), ggml's Q8_0 encoding, and the
/// refusals of what GGUF cannot hold. `tools/bench/gguf.sh` runs the files in llama.cpp.
@Suite struct GGUFExportTests {
    func read(_ f: GGUF.File, _ name: String, row: Int, cols: Int) -> [Float] {
        let t = f.tensors.first { $0.name == name }!
        return f.bytes.subdata(in: (t.offset + row * cols * 4)..<(t.offset + (row + 1) * cols * 4)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    @Test func mixtralIsLlamaCppsLlama() throws {
        let src = Where.shared.appendingPathComponent("models/mixtral-ref")
        let out = Where.temp("gguf").appendingPathExtension("gguf")
        defer { try? FileManager.default.removeItem(at: out) }
        let s = try GGUFExport.write(model: src, output: out, type: .f32)
        #expect(s.architecture == "llama")
        let f = try GGUF.File(path: out)
        #expect(f.metadata["general.architecture"] == .string("llama") && f.metadata["llama.expert_count"] == .u32(8))
        #expect(f.metadata["llama.block_count"] == .u32(6) && f.metadata["llama.rope.dimension_count"] == .u32(32))
        #expect(f.tensors.count == 3 + 6 * 10)
        // Offsets: sequential, each aligned, data inside the file.
        var expected = f.dataStart
        for t in f.tensors {
            #expect(t.offset == expected, "\(t.name)")
            expected += (t.shape.reduce(1, *) * 4 + 31) / 32 * 32
        }
        #expect(expected == f.bytes.count)
        let model = try ModelRegistry.load(directory: src)
        let h = model.hiddenSize
        #expect(f.tensors.first { $0.name == "blk.0.ffn_gate_exps.weight" }?.shape == [8, 512, h])
        #expect(f.tensors.first { $0.name == "blk.0.ffn_down_exps.weight" }?.shape == [8, h, 512])
        let emb = Tensor(zeros: [h]); model.embedding.widenRow(5, into: emb.data)
        #expect(read(f, "token_embd.weight", row: 5, cols: h) == emb.array)
        let a = model.layers[2].attention as! GroupedQueryAttention
        let q = (a.q as! DenseLinear).weight, row = Tensor(zeros: [h])
        // Row 1 of head 3 is HF's row hd/2 of head 3; row 2 is HF's row 1.
        q.widenRow(3 * 32 + 16, into: row.data)
        #expect(read(f, "blk.2.attn_q.weight", row: 3 * 32 + 1, cols: h) == row.array)
        q.widenRow(3 * 32 + 1, into: row.data)
        #expect(read(f, "blk.2.attn_q.weight", row: 3 * 32 + 2, cols: h) == row.array)
        let w1 = (model.layers[1].feedForward.moe!.experts[3].gate as! DenseLinear).weight
        w1.widenRow(7, into: row.data)
        #expect(read(f, "blk.1.ffn_gate_exps.weight", row: 3 * 512 + 7, cols: h) == row.array)
        // Tokenizer: scores −(merge rank), byte-fallback tokens typed BYTE, specials CONTROL.
        guard case .strings(let tokens) = f.metadata["tokenizer.ggml.tokens"], case .f32s(let scores) = f.metadata["tokenizer.ggml.scores"],
              case .i32s(let types) = f.metadata["tokenizer.ggml.token_type"] else { Issue.record("tokenizer arrays"); return }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: src.appendingPathComponent("tokenizer.json"))) as! [String: Any]
        let merges = (json["model"] as! [String: Any])["merges"] as! [Any]
        func joined(_ m: Any) -> String { (m as? [String])?.joined() ?? (m as! String).replacingOccurrences(of: " ", with: "") }
        for r in [0, 10, merges.count - 1] { #expect(scores[tokens.firstIndex(of: joined(merges[r]))!] == -Float(r)) }
        #expect(types[tokens.firstIndex(of: "<0x0A>")!] == 6 && types[tokens.firstIndex(of: "<s>")!] == 3 && types[tokens.firstIndex(of: "▁the") ?? 500] == 1)
        #expect(f.metadata["tokenizer.ggml.model"] == .string("llama") && f.metadata["tokenizer.ggml.add_bos_token"] == .bool(true))
    }

    @Test func qwenMoEIsQwen2MoE() throws {
        let src = Where.shared.appendingPathComponent("models/qwen-moe-ref")
        let out = Where.temp("gguf").appendingPathExtension("gguf")
        defer { try? FileManager.default.removeItem(at: out) }
        _ = try GGUFExport.write(model: src, output: out, type: .bf16)
        let f = try GGUF.File(path: out)
        #expect(f.metadata["general.architecture"] == .string("qwen2moe") && f.metadata["qwen2moe.expert_feed_forward_length"] == .u32(128))
        #expect(f.metadata["tokenizer.ggml.model"] == .string("gpt2") && f.metadata["tokenizer.ggml.pre"] == .string("gpt-2"))
        #expect(f.tensors.contains { $0.name == "blk.5.ffn_gate_inp_shexp.weight" && $0.shape == [256] && $0.type == 0 })
        #expect(f.tensors.contains { $0.name == "blk.0.attn_q.bias" } && f.tensors.first { $0.name == "blk.0.ffn_up_exps.weight" }?.type == 30)
        if case .strings(let m) = f.metadata["tokenizer.ggml.merges"] { #expect(m.first?.split(separator: " ").count == 2) } else { Issue.record("merges") }
    }

    /// ggml's Q8_0: d = max|x| / 127 as f16, q = round(x / d), half away from zero.
    @Test func q8_0IsGgmlsEncoding() {
        var x = (0..<32).map { Float($0) - 15.5 }
        x[3] = 127 * 0.25      // max |x| = 31.75 → d = 0.25
        x[5] = 0.125; x[6] = -0.125   // exactly half a step: away from zero
        var block = [UInt8](repeating: 0, count: 34)
        GGUF.encode(x, count: 32, type: .q8_0, into: &block)
        #expect(Float(Float16(bitPattern: UInt16(block[0]) | UInt16(block[1]) << 8)) == 0.25)
        #expect(Int8(bitPattern: block[2 + 3]) == 127 && Int8(bitPattern: block[2 + 0]) == -62 && Int8(bitPattern: block[2 + 1]) == -58)
        #expect(Int8(bitPattern: block[2 + 5]) == 1 && Int8(bitPattern: block[2 + 6]) == -1)
    }

    @Test func refusesWhatGGUFCannotHold() throws {
        // Unequal expert counts (a plan applied to the Mixtral fixture).
        let src = Where.fixture("mixtral")
        let plan = PruningPlan(method: "test", model: "mixtral", parameters: [:],
                               layers: [.init(layer: 0, experts: 4, kept: [0, 1, 2], scores: [:]), .init(layer: 1, experts: 4, kept: [1, 2], scores: [:])])
        let pruned = Where.temp("uneven"), out = Where.temp("gguf").appendingPathExtension("gguf")
        defer { try? FileManager.default.removeItem(at: pruned) }
        try PlanApplier.apply(plan, model: src, output: pruned)
        #expect(throws: PruningError.self) { try GGUFExport.write(model: pruned, output: out, type: .f32) }
        #expect(!FileManager.default.fileExists(atPath: out.path))
        // A family llama.cpp's two architectures here do not express.
        #expect(throws: PruningError.self) { try GGUFExport.write(model: Where.fixture("olmoe"), output: out, type: .f32) }
    }
}
