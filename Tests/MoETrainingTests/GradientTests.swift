import Foundation
import Testing
import MoETensor
import MoECheckpoint
import MoEModels
@testable import MoETraining

enum Where {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static func model(_ n: String) -> URL { repo.appendingPathComponent("Tests/MoEModelsTests/Fixtures/\(n)") }
    static func grads(_ n: String) -> URL { repo.appendingPathComponent("Tests/MoETrainingTests/Fixtures/\(n).safetensors") }
    static let shared = repo.deletingLastPathComponent().appendingPathComponent("shared")
    static func temp(_ tag: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("moepress-train-\(tag)-\(getpid())-\(UInt64.random(in: 0..<1 << 40))")
    }
}

let fixtureIds = [[3, 17, 42, 5, 88, 61, 7, 19, 33], [90, 2, 14, 14, 70, 11, 9, 23, 4]]
let fixtureLabels = [[3, 17, 42, 5, 88, 61, 7, 19, 33], [-100, -100, -100, 14, 70, 11, -100, 23, 4]]

/// Gradients of every parameter against HF transformers + PyTorch autograd (tools/oracle/make_grad_fixtures.py),
/// on the tiny fixtures: max |Δ| over a tensor ≤ 1e-4 × that tensor's largest gradient.
@Suite struct GradientParityTests {
    /// `headRows` 3 runs the LM head on blocks of 3 rows (the default block holds every fixture row).
    @Test(arguments: ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v2_qlora", "deepseek_v3", "phimoe", "gpt_oss"], [CausalLMTraining.defaultHeadRows, 3])
    func gradientsMatchPyTorch(_ family: String, headRows: Int) throws {
        let model = try ModelRegistry.load(directory: Where.model(family))
        try CausalLMTraining.check(model)
        model.makeTrainable()   // gpt-oss's experts are strided views of its fused tensors; the others are f32 tensors already
        let params = TrainableParameters.tensors(model)
        let g = Gradients(trainable: params.map(\.tensor))
        let batch = TrainingBatch(ids: fixtureIds, labels: fixtureLabels)
        let r = CausalLMTraining.lossAndGradients(model, batch: batch, gradients: g, normalizer: Double(batch.predicted), training: false,
                                                  headRows: headRows)
        #expect(headRows >= batch.ids.joined().count || batch.ids.joined().count > 2 * headRows, "the fixture has too few rows to split")
        let oracle = try SafeTensorsFile(path: Where.grads(family).path)
        let expectedLoss = try oracle.tensor("loss").data[0]
        #expect(abs(Float(r.mean) - expectedLoss) < 1e-5 * max(1, expectedLoss), "loss \(r.mean) vs \(expectedLoss)")
        #expect(Set(params.map(\.name)) == Set(oracle.tensors.map(\.name).filter { $0 != "loss" }))
        var worst = (name: "", rel: Float(0))
        for (name, t) in params {
            let want = try oracle.tensor(name)
            let got = g[t]!
            #expect(got.shape == want.shape || got.count == want.count, "\(name) \(got.shape) vs \(want.shape)")
            let scale = want.array.reduce(Float(0)) { max($0, abs($1)) }
            let rel = got.maxAbsDifference(want) / max(scale, 1e-12)
            if rel > worst.rel { worst = (name, rel) }
        }
        #expect(worst.rel <= 1e-4, "worst: \(worst.name) relative error \(worst.rel)")
    }
}

/// Compressed Experts against an independent PyTorch statement of methods.md §4.2 (qwen3_moe fixture, top-3
/// renormalised routing, 1 main + 2 auxiliary experts, random vectors): every parameter's gradient, the
/// vectors' included, and the loss.
@Suite struct CompressedExpertsGradientTests {
    @Test func gradientsMatchPyTorch() throws {
        let model = try ModelRegistry.load(directory: Where.model("qwen3_moe"))
        let oracle = try SafeTensorsFile(path: Where.grads("qwen3_moe_ce").path)
        for l in model.description.moeLayerIndices {
            guard var b = model.layers[l].feedForward.moe else { continue }
            let e = b.numExperts
            func vectors(_ kind: String) throws -> [Tensor] { try (0..<e).map { try oracle.tensor("init.layers.\(l).moe.experts.\($0).\(kind)") } }
            b.compressedExperts = CompressedExperts(mainExperts: 1, gate: try vectors("ce_gate"), up: try vectors("ce_up"), mid: try vectors("ce_mid"))
            model.layers[l].feedForward = .moe(b)
        }
        let params = TrainableParameters.tensors(model)
        let g = Gradients(trainable: params.map(\.tensor))
        let batch = TrainingBatch(ids: fixtureIds, labels: fixtureLabels)
        let r = CausalLMTraining.lossAndGradients(model, batch: batch, gradients: g, normalizer: Double(batch.predicted), training: false)
        let expectedLoss = try oracle.tensor("loss").data[0]
        #expect(abs(Float(r.mean) - expectedLoss) < 1e-5 * expectedLoss, "loss \(r.mean) vs \(expectedLoss)")
        // The inference path computes the same loss.
        #expect(abs(CausalLMTraining.loss(model, batch: batch).mean - r.mean) < 1e-5)
        var worst = (name: "", rel: Float(0))
        for (name, t) in params {
            let want = try oracle.tensor(name)
            let scale = want.array.reduce(Float(0)) { max($0, abs($1)) }
            let rel = g[t]!.maxAbsDifference(want) / max(scale, 1e-12)
            if rel > worst.rel { worst = (name, rel) }
        }
        #expect(params.contains { $0.name.hasSuffix("ce_mid") })
        #expect(worst.rel <= 1e-4, "worst: \(worst.name) relative error \(worst.rel)")
    }
}

/// Factorised layers follow from the dense gradient G = ∂L/∂W (checked against PyTorch above) by the chain
/// rule: W = A·B gives ∂L/∂A = G·Bᵀ, ∂L/∂B = Aᵀ·G; LoRA W + s·B·A gives ∂L/∂B = s·G·Aᵀ, ∂L/∂A = s·Bᵀ·G.
@Suite struct FactorisedGradientTests {
    func denseGradient(_ model: CausalLM, of w: Tensor) -> Tensor {
        let g = Gradients(trainable: [w])
        let batch = TrainingBatch(ids: fixtureIds, labels: fixtureLabels)
        _ = CausalLMTraining.lossAndGradients(model, batch: batch, gradients: g, normalizer: Double(batch.predicted), training: false)
        return g[w]!
    }

    func random(_ shape: [Int], seed: UInt64, scale: Float) -> Tensor {
        var r = SeededGenerator(seed: seed)
        return Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in Float(r.nextUnit() * 2 - 1) * scale })
    }

    @Test func lowRankAndLoRAFollowTheDenseGradient() throws {
        let model = try ModelRegistry.load(directory: Where.model("mixtral"))
        var block = model.layers[1].feedForward.moe!
        let e0 = block.experts[0]
        let w = (e0.up as! DenseLinear).weight             // [I, H]
        let (m, n, r) = (w.shape[0], w.shape[1], 5)
        // Low-rank: replace W by A·B and compare with the dense gradient at W = A·B.
        let a = random([m, r], seed: 1, scale: 0.3), b = random([r, n], seed: 2, scale: 0.3)
        let dense = matmul(a, b)
        block.experts[0] = GatedMLP(gate: e0.gate, up: DenseLinear(weight: dense), down: e0.down, activation: e0.activation)
        model.layers[1].feedForward = .moe(block)
        let gw = denseGradient(model, of: dense)
        block.experts[0] = GatedMLP(gate: e0.gate, up: LowRankLinear(a: a, b: b), down: e0.down, activation: e0.activation)
        model.layers[1].feedForward = .moe(block)
        let g = Gradients(trainable: [a, b])
        let batch = TrainingBatch(ids: fixtureIds, labels: fixtureLabels)
        _ = CausalLMTraining.lossAndGradients(model, batch: batch, gradients: g, normalizer: Double(batch.predicted), training: false)
        #expect(g[a]!.maxAbsDifference(matmul(gw, b, transposeB: true)) <= 1e-4 * max(1e-6, matmul(gw, b, transposeB: true).array.map(abs).max()!))
        #expect(g[b]!.maxAbsDifference(matmul(a, gw, transposeA: true)) <= 1e-4 * max(1e-6, matmul(a, gw, transposeA: true).array.map(abs).max()!))

        // LoRA on the attention's q projection, non-zero B, no dropout.
        let attn = model.layers[0].attention as! GroupedQueryAttention
        let q = attn.q as! DenseLinear
        let la = random([4, q.inFeatures], seed: 3, scale: 0.2), lb = random([q.outFeatures, 4], seed: 4, scale: 0.2)
        let s: Float = 16.0 / 4
        let merged = q.weight.tensor!.copy()
        let ba = matmul(lb, la)
        for i in 0..<merged.count { merged.data[i] += s * ba.data[i] }
        func withQ(_ layer: any LinearLayer) {
            model.layers[0].attention = GroupedQueryAttention(q: layer, k: attn.k, v: attn.v, o: attn.o, heads: attn.heads, kvHeads: attn.kvHeads,
                                                              headDim: attn.headDim, rope: attn.rope, qkNorm: attn.qkNorm, clip: attn.clip,
                                                              slidingWindow: attn.slidingWindow, scale: attn.scale)
        }
        withQ(DenseLinear(weight: merged))
        let gq = denseGradient(model, of: merged)
        withQ(LoRALinear(base: q, a: la, b: lb, scale: s))
        let gl = Gradients(trainable: [la, lb])
        _ = CausalLMTraining.lossAndGradients(model, batch: batch, gradients: gl, normalizer: Double(batch.predicted), training: false)
        let wantB = matmul(gq, la, transposeB: true), wantA = matmul(lb, gq, transposeA: true)
        wantB.scale(s); wantA.scale(s)
        #expect(gl[lb]!.maxAbsDifference(wantB) <= 1e-4 * wantB.array.map(abs).max()!)
        #expect(gl[la]!.maxAbsDifference(wantA) <= 1e-4 * wantA.array.map(abs).max()!)
        #expect(gl[q.weight.tensor!] == nil)   // the base stays frozen
    }
}

/// SVD-LLM's update: adapters on each factor of a low-rank expert, A' = A + s·B₂·A₂ and B' = B + s·B₁·A₁ with
/// W = A'·B'. From G = ∂L/∂W: ∂L/∂A' = G·B'ᵀ, ∂L/∂B' = A'ᵀ·G, then each adapter as LoRA on its factor. Merging
/// keeps the rank and the function.
@Suite struct AdaptedLowRankTests {
    @Test func factorAdaptersFollowTheDenseGradientAndMergeAtTheSameRank() throws {
        let t = FactorisedGradientTests()
        let model = try ModelRegistry.load(directory: Where.model("mixtral"))
        var block = model.layers[1].feedForward.moe!
        let e0 = block.experts[0]
        let w = (e0.up as! DenseLinear).weight
        let (m, n, r, k) = (w.shape[0], w.shape[1], 5, 3)
        let s: Float = 2
        let a = t.random([m, r], seed: 1, scale: 0.3), b = t.random([r, n], seed: 2, scale: 0.3)
        let a1 = t.random([k, n], seed: 3, scale: 0.2), b1 = t.random([r, k], seed: 4, scale: 0.2)
        let a2 = t.random([k, r], seed: 5, scale: 0.2), b2 = t.random([m, k], seed: 6, scale: 0.2)
        func plus(_ x: Tensor, _ y: Tensor) -> Tensor { let z = x.copy(); for i in 0..<z.count { z.data[i] += s * y.data[i] }; return z }
        let aEff = plus(a, matmul(b2, a2)), bEff = plus(b, matmul(b1, a1))
        let dense = matmul(aEff, bEff)
        func withUp(_ l: any LinearLayer) {
            block.experts[0] = GatedMLP(gate: e0.gate, up: l, down: e0.down, activation: e0.activation)
            model.layers[1].feedForward = .moe(block)
        }
        withUp(DenseLinear(weight: dense))
        let gw = t.denseGradient(model, of: dense)
        let reference = model.forward(fixtureIds)
        let adapted = AdaptedLowRankLinear(first: LoRALinear(base: DenseLinear(weight: b), a: a1, b: b1, scale: s),
                                           second: LoRALinear(base: DenseLinear(weight: a), a: a2, b: b2, scale: s))
        withUp(adapted)
        let g = Gradients(trainable: [a1, b1, a2, b2])
        let batch = TrainingBatch(ids: fixtureIds, labels: fixtureLabels)
        _ = CausalLMTraining.lossAndGradients(model, batch: batch, gradients: g, normalizer: Double(batch.predicted), training: false)
        let dA = matmul(gw, bEff, transposeB: true), dB = matmul(aEff, gw, transposeA: true)
        let want: [(String, Tensor, Tensor)] = [
            ("B₂", b2, matmul(dA, a2, transposeB: true)), ("A₂", a2, matmul(b2, dA, transposeA: true)),
            ("B₁", b1, matmul(dB, a1, transposeB: true)), ("A₁", a1, matmul(b1, dB, transposeA: true)),
        ]
        for (name, p, x) in want {
            x.scale(s)
            #expect(g[p]!.maxAbsDifference(x) <= 1e-4 * x.array.map(abs).max()!, "\(name)")
        }
        // Merged: a LowRankLinear of the same rank computing the same function.
        let merged = adapted.merged()
        #expect(merged.rank == r && merged.parameterCount == m * r + r * n)
        withUp(merged)
        #expect(model.forward(fixtureIds).maxAbsDifference(reference) < 1e-4)
    }

    /// LoRA.attach on a low-rank projection adapts its factors; merge keeps the model's size.
    @Test func healingALowRankModelKeepsItsSize() throws {
        let t = FactorisedGradientTests()
        let model = try ModelRegistry.load(directory: Where.model("mixtral"))
        for l in model.description.moeLayerIndices {
            var block = model.layers[l].feedForward.moe!
            block.experts = block.experts.enumerated().map { e, x in
                let w = (x.down as! DenseLinear).weight
                return GatedMLP(gate: x.gate, up: x.up, down: LowRankLinear(a: t.random([w.shape[0], 4], seed: UInt64(e), scale: 0.3),
                                                                              b: t.random([4, w.shape[1]], seed: UInt64(100 + e), scale: 0.3)),
                                activation: x.activation)
            }
            model.layers[l].feedForward = .moe(block)
        }
        let before = model.parameterCount
        var settings = LoRA.Settings()
        settings.rank = 2
        settings.targets = ["down"]
        try LoRA.attach(to: model, settings)
        #expect(model.layers[1].feedForward.moe!.experts[0].down is AdaptedLowRankLinear)
        let names = TrainableParameters.all(model).map(\.name).filter { $0.contains(".lora_") }
        #expect(names.contains("layers.1.moe.experts.0.down.lowrank_a.lora_B") && names.contains("layers.1.moe.experts.0.down.lowrank_b.lora_A"))
        LoRA.merge(model)
        #expect(model.parameterCount == before)
        #expect(model.layers[1].feedForward.moe!.experts[0].down is LowRankLinear)
    }
}

/// Central finite differences on one decoder layer (an MoE layer with compressed experts, a low-rank expert
/// and LoRA with dropout), scalar loss Σ out ⊙ r: the analytic gradient of sampled entries of every kind of
/// parameter and of the input agrees to 2%.
@Suite struct FiniteDifferenceTests {
    @Test func decoderLayerMatchesFiniteDifferences() throws {
        let model = try ModelRegistry.load(directory: Where.model("qwen3_moe"))
        var layer = model.layers[0]
        var b = layer.feedForward.moe!
        var ce = CompressedExperts(mainExperts: 1, experts: b.numExperts, hidden: b.hiddenSize, intermediate: b.experts[0].intermediateSize)
        var rng = SeededGenerator(seed: 11)
        for t in ce.gate + ce.up + ce.mid { for i in 0..<t.count { t.data[i] = 1 + Float(rng.nextUnit() - 0.5) * 0.6 } }
        ce.epsilon = 1e-6
        b.compressedExperts = ce
        let e1 = b.experts[1]
        let w = (e1.down as! DenseLinear).weight
        let la = Tensor(shape: [w.shape[0], 3], values: (0..<(w.shape[0] * 3)).map { _ in Float(rng.nextUnit() - 0.5) * 0.4 })
        let lbb = Tensor(shape: [3, w.shape[1]], values: (0..<(3 * w.shape[1])).map { _ in Float(rng.nextUnit() - 0.5) * 0.4 })
        b.experts[1] = GatedMLP(gate: e1.gate, up: e1.up, down: LowRankLinear(a: la, b: lbb), activation: e1.activation)
        layer.feedForward = .moe(b)
        let attn = layer.attention as! GroupedQueryAttention
        let v = attn.v as! DenseLinear
        let loraA = Tensor(shape: [2, v.inFeatures], values: (0..<(2 * v.inFeatures)).map { _ in Float(rng.nextUnit() - 0.5) * 0.4 })
        let loraB = Tensor(shape: [v.outFeatures, 2], values: (0..<(v.outFeatures * 2)).map { _ in Float(rng.nextUnit() - 0.5) * 0.4 })
        layer.attention = GroupedQueryAttention(q: attn.q, k: attn.k, v: LoRALinear(base: v, a: loraA, b: loraB, scale: 2, dropout: 0.25), o: attn.o,
                                                heads: attn.heads, kvHeads: attn.kvHeads, headDim: attn.headDim, rope: attn.rope, qkNorm: attn.qkNorm,
                                                clip: attn.clip, slidingWindow: attn.slidingWindow, scale: attn.scale)
        guard case .perHead(let qn, _) = attn.qkNorm else { Issue.record("qwen3_moe has per-head q/k norms"); return }
        let qNorm = qn.weight
        let L = 7
        let x = Tensor(shape: [2 * L, model.hiddenSize], values: (0..<(2 * L * model.hiddenSize)).map { _ in Float(rng.nextUnit() - 0.5) * 2 })
        let weights = Tensor(shape: x.shape, values: (0..<x.count).map { _ in Float(rng.nextUnit() - 0.5) })
        func lossValue() -> Double {
            let (y, _) = layerForward(layer, x, seqLen: L, seed: 5, training: true)
            var s = 0.0
            for i in 0..<y.count { s += Double(y.data[i]) * Double(weights.data[i]) }
            return s
        }
        let probes: [(String, Tensor)] = [("ce_gate", ce.gate[2]), ("ce_mid", ce.mid[3]), ("lowrank_a", la), ("lowrank_b", lbb),
                                          ("lora_A", loraA), ("lora_B", loraB), ("router", (b.router.linear as! DenseLinear).weight.tensor!), ("o", (attn.o as! DenseLinear).weight.tensor!), ("q_norm", qNorm),
                                          ("input_norm", layer.inputNorm.weight)]
        let g = Gradients(trainable: probes.map(\.1))
        let (_, tape) = layerForward(layer, x, seqLen: L, seed: 5, training: true)
        let dx = layerBackward(layer, tape, weights, seqLen: L, g: g)
        let h: Float = 1e-2
        var significant = 0, total = 0
        // Weights are views of the read-only mapped fixture: nudging them in place asks for writes, as training does.
        for (_, t) in probes { try t.prepareForWritesInPlace() }
        func check(_ name: String, _ t: Tensor, _ analytic: Tensor, picks: Int) {
            var r = SeededGenerator(seed: UInt64(name.utf8.count))
            for _ in 0..<picks {
                let i = Int(r.next() % UInt64(t.count))
                let old = t.data[i]
                t.data[i] = old + h; let up = lossValue()
                t.data[i] = old - h; let down = lossValue()
                t.data[i] = old
                let numeric = (up - down) / Double(2 * h)
                let a = Double(analytic.data[i])
                total += 1
                if abs(numeric) > 0.05 { significant += 1 }
                #expect(abs(numeric - a) <= 0.02 * max(abs(numeric), abs(a)) + 2e-3, "\(name)[\(i)]: analytic \(a), numeric \(numeric)")
            }
        }
        for (name, t) in probes { check(name, t, g[t]!, picks: 6) }
        check("input", x, dx, picks: 8)
        #expect(significant * 2 > total, "most probed derivatives must be far above the tolerance (\(significant)/\(total))")
    }
}

/// NEFTune as HF's `neftune_post_forward_hook` defines it: uniform noise in ±α/√(L·d) on the input embeddings,
/// in training only.
@Suite struct NEFTuneTests {
    @Test func noiseHasHFsBoundAndSpread() {
        let (rows, seqLen, d, alpha): (Int, Int, Int, Float) = (4 * 64, 64, 64, 5)
        let x = Tensor(zeros: [rows, d])
        CausalLMTraining.addNEFTuneNoise(x, seqLen: seqLen, alpha: alpha, seed: 1)
        let bound = Double(alpha) / Double(seqLen * d).squareRoot()
        let v = x.array.map(Double.init)
        let mean = v.reduce(0, +) / Double(v.count)
        let variance = v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(v.count)
        #expect(v.allSatisfy { abs($0) <= bound } && v.map(abs).max()! > 0.99 * bound)
        #expect(abs(mean) < 0.02 * bound)
        #expect(abs(variance / (bound * bound / 3) - 1) < 0.05, "variance \(variance) vs U(±b)'s \(bound * bound / 3)")
    }

    @Test func onlyInTraining() throws {
        let model = try ModelRegistry.load(directory: Where.model("mixtral"))
        let batch = TrainingBatch(ids: fixtureIds, labels: fixtureLabels)
        let params = TrainableParameters.tensors(model)
        func loss(_ training: Bool, _ alpha: Float) -> Double {
            CausalLMTraining.lossAndGradients(model, batch: batch, gradients: Gradients(trainable: params.map(\.tensor)), normalizer: 1,
                                              training: training, neftuneAlpha: alpha).sum
        }
        #expect(loss(false, 5) == loss(false, 0))
        #expect(loss(true, 5) != loss(true, 0))
        #expect(loss(true, 5) == loss(true, 5))
    }
}
