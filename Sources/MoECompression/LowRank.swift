import Foundation
import MoETensor
import MoECheckpoint
import MoEModels
import MoECalibration

/// Intra-expert low-rank decomposition (MoE-I² stage 2, methods.md §3.8): each targeted routed-expert
/// matrix W [m, n] becomes A [m, r] and B [r, n] (plain truncated SVD or SVD-LLM whitening), with ranks
/// either uniform, r = ⌊ρ·m·n/(m+n)⌋ for a kept-parameter fraction ρ, or importance-weighted within each
/// layer's budget.
public enum LowRank {
    public enum Method: String, Sendable, Codable, CaseIterable { case svd, svdllm }
    public enum Allocation: String, Sendable, Codable, CaseIterable { case uniform, importance }
    /// The average rank of an m×n matrix: from the fraction of its parameters kept, or given directly.
    public enum Target: Sendable, Equatable {
        case keep(Double)
        case rank(Int)
        func averageRank(m: Int, n: Int) -> Int {
            switch self {
            case .keep(let rho): LowRank.rank(keep: rho, m: m, n: n)
            case .rank(let r): max(1, min(r, min(m, n)))
            }
        }
    }

    /// MoE-I² stage 2 as the paper runs it unless told otherwise: SVD-LLM (whitened by calibration) with ranks
    /// shared by stage-1 importance. `decompose`, the recipe's decompose stage and `compress` all start from these.
    public struct Options: Sendable {
        public var method: Method = .svdllm
        public var target: Target = .keep(0.6)
        public var allocation: Allocation = .importance
        /// α of the importance allocation: weights (I + ε)^α.
        public var alpha = 0.15
        public var epsilon = 1e-8
        public var targets: Set<String> = ["gate", "up", "down"]
        public init() {}
    }

    public static func rank(keep rho: Double, m: Int, n: Int) -> Int {
        max(1, min(min(m, n), Int((rho * Double(m) * Double(n) / Double(m + n)).rounded(.down))))
    }

    /// Splits a layer's rank budget over its experts in proportion to `weights`, each rank in 1…cap, summing
    /// to min(budget, cap·count) exactly: shares outside 1…cap are clamped and the difference shared among
    /// the others (water-filling), the ⌊·⌋ of methods.md's formula is taken, and the units the floors leave
    /// go back one each by largest fractional part (ties to the lower index). Heavier experts never get less.
    public static func allocate(budget: Int, weights: [Double], cap: Int) -> [Int] {
        let n = weights.count
        guard n > 0 else { return [] }
        precondition(cap >= 1 && weights.allSatisfy { $0 > 0 && $0.isFinite }, "weights must be positive, cap ≥ 1")
        let total = max(n, min(budget, cap * n))
        var share = [Double](repeating: 0, count: n)
        var fixed = [Bool](repeating: false, count: n)
        var left = Double(total)
        for _ in 0...(2 * n) {
            let free = (0..<n).filter { !fixed[$0] }
            if free.isEmpty { break }
            let sum = free.reduce(0.0) { $0 + weights[$1] }
            for i in free { share[i] = left * weights[i] / sum }
            var bound = free.filter { share[$0] > Double(cap) }
            var value = Double(cap)
            if bound.isEmpty { bound = free.filter { share[$0] < 1 }; value = 1 }
            if bound.isEmpty { break }
            for i in bound { share[i] = value; fixed[i] = true; left -= value }
        }
        var ranks = share.map { max(1, min(cap, Int(($0 + 1e-9).rounded(.down)))) }
        let frac = (0..<n).map { share[$0] - Double(ranks[$0]) }
        let order = (0..<n).sorted { (frac[$0], -$0) > (frac[$1], -$1) }
        var remaining = total - ranks.reduce(0, +)
        while remaining > 0 {
            for i in order where remaining > 0 && ranks[i] < cap { ranks[i] += 1; remaining -= 1 }
        }
        return ranks
    }

    /// Ranks of one layer's `count` experts for m×n matrices: R_a each (uniform), or R_a·count shared by
    /// (I + ε)^α (importance).
    public static func ranks(_ o: Options, importance: [Double]?, count: Int, m: Int, n: Int) -> [Int] {
        let average = o.target.averageRank(m: m, n: n)
        guard o.allocation == .importance, let importance else { return [Int](repeating: average, count: count) }
        precondition(importance.count == count, "importance has \(importance.count) values for \(count) experts")
        return allocate(budget: average * count, weights: importance.map { pow(max($0, 0) + o.epsilon, o.alpha) }, cap: min(m, n))
    }

    public static func svdFactors(_ w: Tensor, rank r: Int) throws -> (a: Tensor, b: Tensor) {
        let m = w.shape[0], n = w.shape[1]
        let (u, s, vt) = try LinearAlgebra.svd(w)
        let k = s.count
        precondition(r >= 1 && r <= k, "rank \(r) outside 1…\(k)")
        let a = Tensor(zeros: [m, r]), b = Tensor(zeros: [r, n])
        for j in 0..<r {
            let root = s[j].squareRoot()
            for i in 0..<m { a.data[i * r + j] = u.data[i * k + j] * root }
            for c in 0..<n { b.data[j * n + c] = vt.data[j * n + c] * root }
        }
        return (a, b)
    }

    /// SVD-LLM (methods.md §3.8, §5.13): with G = Σ x xᵀ over the inputs the matrix sees (f64) and its
    /// Cholesky factor S (G = S Sᵀ), truncate the SVD of W·S and undo the whitening:
    /// A = U_r·√Σ_r, B = √Σ_r·V_rᵀ·S⁻¹. This minimises ‖(W − AB)·X‖_F, the error on the actual inputs.
    /// Fallback: when Cholesky fails (G singular, e.g. an expert that saw fewer tokens than dimensions, or
    /// none), G gets (−λ_min + 1e-6)·I added; with no tokens at all that is 1e-6·I and the result is plain SVD's.
    public static func svdLLMFactors(_ w: Tensor, gram: [Double], rank r: Int) throws -> (a: Tensor, b: Tensor, jittered: Bool) {
        let white = try whitening(gram: gram, n: w.shape[1])
        let (a, b) = try svdLLMFactors(w, whitening: white, rank: r)
        return (a, b, white.jittered)
    }

    /// The Cholesky factor S of a Gram matrix (lower, f64), jittered when G is singular; one per expert input,
    /// shared by the matrices that read it (gate and up).
    public struct Whitening: Sendable {
        public let lower: [Double]
        public let n: Int
        public let jittered: Bool
    }

    public static func whitening(gram: [Double], n: Int) throws -> Whitening {
        precondition(gram.count == n * n, "Gram \(gram.count) for \(n) inputs")
        var s = gram
        do {
            try LinearAlgebra.cholesky64(&s, n: n)
            return Whitening(lower: s, n: n, jittered: false)
        } catch {
            let lmin = try LinearAlgebra.symmetricEigenvalues64(gram, n: n).first ?? 0
            s = gram
            for i in 0..<n { s[i * n + i] += -min(lmin, 0) + 1e-6 }
            try LinearAlgebra.cholesky64(&s, n: n)
            return Whitening(lower: s, n: n, jittered: true)
        }
    }

    /// SVD-LLM's factors of W [m, n] for a whitening S of its inputs: the truncated SVD of W·S gives A = U_r√Σ_r,
    /// and B = √Σ_r V_rᵀ S⁻¹ is solved from B·S = √Σ_r V_rᵀ (no inverse formed).
    public static func svdLLMFactors(_ w: Tensor, whitening white: Whitening, rank r: Int) throws -> (a: Tensor, b: Tensor) {
        let m = w.shape[0], n = w.shape[1]
        precondition(white.n == n, "whitening of \(white.n) inputs for a matrix of \(n)")
        // W·S in f64 (S lower triangular), then SVD in f32.
        let ws = Tensor(zeros: [m, n])
        var wide = (0..<(m * n)).map { Double(w.data[$0]) }
        BLAS.lowerRight(m: m, n: n, a: &wide, lower: white.lower)
        for i in 0..<(m * n) { ws.data[i] = Float(wide[i]) }
        let (a, bw) = try svdFactors(ws, rank: r)      // A = U√Σ, bw = √Σ Vᵀ
        var bwide = (0..<(r * n)).map { Double(bw.data[$0]) }
        BLAS.lowerRight(m: r, n: n, a: &bwide, lower: white.lower, solve: true)
        let b = Tensor(zeros: [r, n])
        for i in 0..<(r * n) { b.data[i] = Float(bwide[i]) }
        return (a, b)
    }

    public struct Report: Codable, Sendable {
        public struct Layer: Codable, Sendable {
            public var layer: Int
            /// Stage-1 importance per expert, when the ranks were allocated by it.
            public var importance: [Double]?
            /// Rank per expert, per projection ("gate", "up", "down").
            public var ranks: [String: [Int]]
            /// ‖W − AB‖_F / ‖W‖_F per expert, per projection.
            public var relativeError: [String: [Double]]
        }
        public var method: String
        public var allocation: String
        public var keep: Double?
        public var rank: Int?
        public var alpha: Double?
        public var matrices: Int
        public var parametersBefore: Int
        public var parametersAfter: Int
        public var relativeError: [String: Double]   // per projection: mean over experts
        public var jitteredCholesky = 0
        public var layers: [Layer] = []
    }

    /// Decomposes the routed experts' `targets` projections of every MoE layer and writes the checkpoint
    /// atomically, with `modeling_moepress.py` so HF transformers loads it with `trust_remote_code=True`;
    /// every other tensor is copied byte for byte. Fused expert tensors (`experts.gate_up_proj`,
    /// `experts.down_proj`) are written per expert. `importance` (MoE layer → one value per expert) is
    /// needed by the importance allocation; `cache` (a calibration cache of this model) by SVD-LLM, which
    /// runs the experts of `open` (the folder's model, when the caller has it open) to make Gram matrices.
    public static func decompose(model dir: URL, open: CausalLM? = nil, options o: Options, whitening cache: CalibrationCache? = nil,
                                 importance: [Int: [Double]]? = nil,
                                 output: URL, overwrite: Bool = false, quiet: Bool = false,
                                 shardSize: Int = CheckpointWriter.defaultShardSize, resumable: Bool = false) throws -> Report {
        if case .keep(let rho) = o.target, !(rho > 0 && rho <= 1) {
            throw PruningError.invalid("--ratio (fraction of expert parameters kept) must be in (0, 1]")
        }
        if case .rank(let r) = o.target, r < 1 { throw PruningError.invalid("--rank must be at least 1") }
        guard !o.targets.isEmpty, o.targets.isSubset(of: ["gate", "up", "down"]) else { throw PruningError.invalid("targets must be gate, up and/or down") }
        guard o.method == .svd || cache != nil else { throw PruningError.invalid("svdllm needs a calibration cache with Gram matrices") }
        let input = try FolderFingerprint(dir)
        let config = try HFConfig(modelDirectory: dir)
        let described = try ModelRegistry.describe(config)
        let (family, filled, d) = (described.family, described.config, described.description)
        let ckpt = try Checkpoint(directory: dir)
        let names = try family.checkpointNames(filled, description: d, has: ckpt.contains)
        let perExpert = try ModelRegistry.checkpointNames(directory: dir, checkpoint: ckpt, modules: true)
        let reader = WeightReader(ckpt: ckpt, description: d, names: names)
        if ckpt.names.contains(where: { $0.hasSuffix(".lowrank_a") }) {
            throw PruningError.invalid("\(dir.path) is already decomposed (it has .lowrank_a factors); decompose the undecomposed model")
        }
        // The ranks, shapes and parameter counts are known before any factor is computed; the factors themselves
        // are computed when the streaming writer reaches their entries (an expert at a time, its Gram matrices
        // made then from the cached block inputs routed to it), so memory holds one expert's work, not the model's.
        let work = FactorWork(method: o.method, cache: cache, model: o.method == .svdllm ? try open ?? ModelRegistry.load(directory: dir) : nil)
        var replace: [String: [SafeTensorsWriter.Entry]] = [:]
        var before = 0, after = 0, count = 0
        var layerRanks: [(layer: Int, importance: [Double]?, ranks: [String: [Int]])] = []
        for l in d.moeLayerIndices {
            let experts = ExpertMatrices(reader: reader, output: perExpert, layer: l, count: d.layers[l].experts!,
                                         intermediate: d.layers[l].expertIntermediate, hidden: d.hiddenSize)
            let imp = importance?[l]
            if o.allocation == .importance {
                guard let imp, imp.count == experts.count else {
                    throw PruningError.invalid("no stage-1 importance for the \(experts.count) experts of layer \(l) (importance allocation)")
                }
            }
            var ranksOf: [String: [Int]] = [:]
            for kind in ["gate", "up", "down"] {
                let (m, n) = kind == "down" ? (d.hiddenSize, experts.intermediate) : (experts.intermediate, d.hiddenSize)
                let targeted = o.targets.contains(kind)
                let ranks = targeted ? Self.ranks(o, importance: imp, count: experts.count, m: m, n: n) : []
                if targeted { ranksOf[kind] = ranks }
                for e in 0..<experts.count {
                    let base = experts.name(e, kind)
                    var out: [SafeTensorsWriter.Entry]
                    if targeted {
                        let r = ranks[e], dtype = experts.dtype(kind)
                        let job = FactorWork.Job(layer: l, expert: e, kind: kind, rank: r, dtype: dtype, matrices: experts)
                        work.add(job)
                        out = [.init("\(base).lowrank_a", dtype: dtype, shape: [m, r]) { work.fill(job, b: false, offset: $0, into: $1) },
                               .init("\(base).lowrank_b", dtype: dtype, shape: [r, n]) { work.fill(job, b: true, offset: $0, into: $1) }]
                        before += m * n
                        after += (m + n) * r
                        count += 1
                    } else if experts.fused {
                        out = [.init("\(base).weight", try experts.stored(e, kind), dtype: experts.dtype(kind))]
                    } else {
                        continue
                    }
                    replace[experts.source(e, kind), default: []].append(contentsOf: out)
                    // A fused source's per-expert biases (gpt-oss) move into the expert's module with it.
                    if experts.fused, let bias = experts.names.location("\(experts.logical(e, kind)).bias") {
                        replace[bias.name, default: []].append(.init("\(base).bias", try reader.vector("\(experts.logical(e, kind)).bias"),
                                                                    dtype: ckpt.info(bias.name)?.dtype ?? .f32))
                    }
                }
            }
            // MXFP4 exponents go with their blocks (the experts are written unquantised).
            for (_, loc) in names.entries where loc.name.contains(".layers.\(l).") {
                if let scales = loc.mxfp4Scales, replace[scales] == nil { replace[scales] = [] }
            }
            layerRanks.append((l, o.allocation == .importance ? imp : nil, ranksOf))
        }
        var entries: [SafeTensorsWriter.Entry] = []
        for name in ckpt.names {
            if let r = replace[name] { entries.append(contentsOf: r) } else { entries.append(try ckpt.rawEntry(name)) }
        }
        var section = "{\"method\": \"\(o.method.rawValue)\", \"allocation\": \"\(o.allocation.rawValue)\""
        switch o.target {
        case .keep(let rho): section += ", \"keep\": \(rho)"
        case .rank(let r): section += ", \"rank\": \(r)"
        }
        if o.allocation == .importance { section += ", \"alpha\": \(o.alpha)" }
        section += ", \"targets\": [\(o.targets.sorted().map { "\"\($0)\"" }.joined(separator: ", "))]}"
        var report: Report? = nil
        let progress = StageProgress("decompose \(o.method.rawValue)", total: count, unit: "matrices", quiet: quiet)
        work.progress = { progress.advance(by: $0) }
        // Resumable: the settings and inputs make the key; the factors' errors are journaled with each durable
        // layer of the output, so a resumed run reports the experts it does not compute again.
        var key: String? = nil
        if resumable {
            var k = "decompose \(o.method) \(o.target) \(o.allocation) \(o.alpha) \(o.epsilon) \(o.targets.sorted())\nmodel \(try Fingerprint.model(dir, checkpoint: ckpt))"
            if let m = cache?.manifest { k += "\ncalibration \(m.modelHash) \(m.dataHash) \(m.seed) \(m.samples)x\(m.seqLen) \(m.activationDType)" }
            if let importance { k += "\nimportance \(importance.keys.sorted().map { "\($0): \(importance[$0]!)" })" }
            key = k
        }
        let out = try AtomicDirectory(output, overwrite: overwrite, resumeKey: key)
        out.inputs = [input]
        if out.resuming {
            if let done: [FactorWork.Done] = out.journal.load("factors") { work.restore(done) }
            if !quiet { Console.note("decompose: resuming \(out.staging.path)") }
        }
        try out.finish { out in
            try CheckpointWriter.write(entries, into: out.staging, shardSize: shardSize, journal: out.journal,
                                       onDurable: { try out.journal.save("factors", work.done) })
            if let error = work.failure { throw error }
            // Per layer and projection, the errors in expert order; the report's means in layer, then expert order.
            var errSum: [String: Double] = [:], errN: [String: Int] = [:]
            let layers = layerRanks.map { lr -> Report.Layer in
                var errors: [String: [Double]] = [:]
                for (kind, ranks) in lr.ranks {
                    errors[kind] = ranks.indices.map { work.errors[FactorWork.Key(layer: lr.layer, expert: $0, kind: kind)] ?? .nan }
                }
                for kind in ["gate", "up", "down"] { for v in errors[kind] ?? [] { errSum[kind, default: 0] += v; errN[kind, default: 0] += 1 } }
                return Report.Layer(layer: lr.layer, importance: lr.importance, ranks: lr.ranks, relativeError: errors)
            }
            var r = Report(method: o.method.rawValue, allocation: o.allocation.rawValue, matrices: count, parametersBefore: before, parametersAfter: after,
                           relativeError: Dictionary(uniqueKeysWithValues: errSum.map { ($0.key, $0.value / Double(max(1, errN[$0.key] ?? 1))) }),
                           jitteredCholesky: work.jittered, layers: layers)
            switch o.target {
            case .keep(let rho): r.keep = rho
            case .rank(let k): r.rank = k
            }
            if o.allocation == .importance { r.alpha = o.alpha }
            report = r
            guard let text = try? String(contentsOfFile: config.path, encoding: .utf8) else { throw PruningError.invalid("\(config.path): cannot read") }
            var withSection = CheckpointOutput.settingMoEPressEntry(text, key: "low_rank", json: section)
            if names.entries.contains(where: { $0.location.mxfp4Scales != nil }) {
                withSection = HFConfig.removingObjectEntry(withSection, "quantization_config")   // written unquantised
            }
            try HFRemoteCode.settingAutoMap(withSection).write(to: out.url("config.json"), atomically: false, encoding: .utf8)
            try HFRemoteCode.source.write(to: out.url(HFRemoteCode.fileName), atomically: false, encoding: .utf8)
            try CheckpointOutput.copyCompanions(from: dir, to: out)
            try CheckpointOutput.writeJSON(r, to: out.url("decompose.json"))
        }
        return report!
    }

    static func relativeError(_ w: Tensor, _ a: Tensor, _ b: Tensor) -> Double {
        let ab = matmul(a, b)
        var num = 0.0, den = 0.0
        for i in 0..<w.count { let x = Double(w.data[i]); let dv = x - Double(ab.data[i]); num += dv * dv; den += x * x }
        return den > 0 ? (num / den).squareRoot() : 0
    }

    /// `moepress export --dense`: multiplies every `<base>.lowrank_a`·`<base>.lowrank_b` back into
    /// `<base>.weight` (in the factors' dtype) and drops MoEPress's low-rank config entry and remote code,
    /// giving a checkpoint stock tools load (unless layers keep unequal expert counts: then the remote code
    /// stays, and `export --uniform` is the way to a stock checkpoint). The product is computed in f32.
    public static func densify(model dir: URL, output: URL, overwrite: Bool = false,
                               shardSize: Int = CheckpointWriter.defaultShardSize) throws -> Int {
        let config = try HFConfig(modelDirectory: dir)
        let ckpt = try Checkpoint(directory: dir)
        var entries: [SafeTensorsWriter.Entry] = []
        var merged = 0
        // A family whose HF class holds experts only fused (gpt-oss) gets them fused back: MoEPress's per-expert
        // modules are multiplied out and gathered into the fused tensors, an expert at a time as the writer reaches it.
        let described = try ModelRegistry.describe(config)
        let (family, filled, d) = (described.family, described.config, described.description)
        let hfLayout = try family.checkpointNames(filled, description: d, has: { _ in false })
        let stored = try family.checkpointNames(filled, description: d, has: ckpt.contains)
        if let l = d.moeLayerIndices.first, hfLayout.location("layers.\(l).moe.experts.0.gate")?.isFused == true,
           stored.location("layers.\(l).moe.experts.0.gate")?.isFused == false {
            let model = try ModelRegistry.load(directory: dir)
            var groups: [String: FusedTensors.Group] = [:], order: [String] = []
            func add(_ logical: String, _ count: Int, _ values: @escaping @Sendable () -> Tensor) throws {
                guard let loc = hfLayout.location(logical), let part = loc.part else { throw PruningError.invalid("\(dir.path): no fused place for \(logical)") }
                if groups[loc.name] == nil { groups[loc.name] = FusedTensors.Group(name: loc.name, shape: part.fullShape); order.append(loc.name) }
                groups[loc.name]!.parts.append((part, count, values))
            }
            try model.forEachLinear { name, layer in
                guard name.contains(".moe.experts.") else { return }
                if layer is LowRankLinear { merged += 1 }
                try add(name, layer.inFeatures * layer.outFeatures) { layer.denseWeight() }
                if let bias = layer.parameters.first(where: { $0.suffix == ".bias" })?.value.tensor { try add("\(name).bias", bias.count) { bias } }
            }
            for name in order { entries.append(try FusedTensors.entry(groups[name]!, dtype: ckpt.info(stored.location("layers.0.attn.q")?.name ?? "")?.dtype ?? .bf16)) }
        }
        let fusedBack = !entries.isEmpty
        for name in ckpt.names {
            if fusedBack, stored.logicalNames(ofTensor: name).contains(where: { $0.contains(".moe.experts.") }) { continue }
            if name.hasSuffix(".lowrank_b") { continue }
            if name.hasSuffix(".lowrank_a") {
                let base = String(name.dropLast(".lowrank_a".count))
                guard let ia = ckpt.info(name), let ib = ckpt.info("\(base).lowrank_b"), ia.shape.count == 2, ib.shape.count == 2, ia.shape[1] == ib.shape[0] else {
                    throw CheckpointError(file: dir.path, tensor: name, "needs a matching \(base).lowrank_b [r, in]")
                }
                entries.append(.init("\(base).weight", matmul(try ckpt.tensor(name), try ckpt.tensor("\(base).lowrank_b")), dtype: ia.dtype))
                merged += 1
            } else {
                entries.append(try ckpt.rawEntry(name))
            }
        }
        try AtomicDirectory.write(output, overwrite: overwrite) { out in
            try CheckpointWriter.write(entries, into: out.staging, shardSize: shardSize)
            guard let text = try? String(contentsOfFile: config.path, encoding: .utf8) else { throw PruningError.invalid("\(config.path): cannot read") }
            var plain = CheckpointOutput.removingMoEPressEntry(text, key: "low_rank")
            // Unequal expert counts per layer still need the remote code; otherwise the result is stock.
            let uneven = plain.contains("\"experts_per_layer\": [")
            if !uneven { plain = HFRemoteCode.removingAutoMap(plain) }
            try plain.write(to: out.url("config.json"), atomically: false, encoding: .utf8)
            try CheckpointOutput.copyCompanions(from: dir, to: out)
            if !uneven { try? FileManager.default.removeItem(at: out.url(HFRemoteCode.fileName)) }
        }
        return merged
    }
}

/// One MoE layer's routed-expert matrices, per expert or fused, read through the family's name table;
/// outputs are named in the per-expert layout (`output`).
struct ExpertMatrices {
    let reader: WeightReader
    let output: CheckpointNames
    let layer: Int, count: Int, intermediate: Int, hidden: Int
    var ckpt: Checkpoint { reader.ckpt }
    var names: CheckpointNames { reader.names }

    func logical(_ e: Int, _ kind: String) -> String { "layers.\(layer).moe.experts.\(e).\(kind)" }

    var fused: Bool { names.location(logical(0, "gate"))?.isFused == true }

    /// The per-expert base name the output uses (factors `.lowrank_a/_b`, or `.weight`).
    func name(_ e: Int, _ kind: String) -> String { output.module(logical(e, kind))! }

    /// The checkpoint tensor whose entry this matrix replaces.
    func source(_ e: Int, _ kind: String) -> String { names.location(logical(e, kind))!.name }

    /// The dtype factors and copies are written in: the source's, or for MXFP4 experts (written unquantised) the
    /// attention weights' dtype.
    func dtype(_ kind: String) -> DType {
        let t = ckpt.info(source(0, kind))!.dtype
        if t == .f32 || t == .f16 || t == .bf16 { return t }
        let q = names.location("layers.\(layer).attn.q").flatMap { ckpt.info($0.name)?.dtype }
        return q == .f32 || q == .f16 ? q! : .bf16
    }

    /// Expert `e`'s `kind` projection in its stored dtype (a view).
    func stored(_ e: Int, _ kind: String) throws -> WeightMatrix { try reader.matrix(logical(e, kind)) }

    /// Expert `e`'s `kind` projection widened to f32.
    func matrix(_ e: Int, _ kind: String) throws -> Tensor { try stored(e, kind).float() }
}

/// The factors of a decomposition, computed on demand as the writer reaches them. A miss computes the
/// missing expert and the next ones of its layer together, one per core (each with its own Gram matrices,
/// SVD-LLM), and keeps their factors until both entries of each are written: memory holds a core's worth of
/// experts' work, nothing more.
final class FactorWork: @unchecked Sendable {
    struct Key: Hashable { let layer: Int, expert: Int, kind: String }
    struct Job: @unchecked Sendable {
        let layer: Int, expert: Int, kind: String, rank: Int, dtype: DType
        let matrices: ExpertMatrices
        var key: Key { Key(layer: layer, expert: expert, kind: kind) }
    }
    let method: LowRank.Method
    let cache: CalibrationCache?
    let model: CausalLM?
    let lock = NSLock()
    /// Called with the number of matrices each batch of experts finished.
    var progress: ((Int) -> Void)?
    private(set) var failure: (any Error)?
    private(set) var errors: [Key: Double] = [:]
    /// Factors whose Cholesky needed jitter.
    private var jitteredKeys = Set<Key>()
    var jittered: Int { jitteredKeys.count }
    /// Factors fully handed to the writer.
    private var written = Set<Key>()

    /// A computed factor's record in a resumable output's journal.
    struct Done: Codable { let layer: Int, expert: Int, kind: String, error: Double, jittered: Bool }
    var done: [Done] {
        lock.lock()
        defer { lock.unlock() }
        return errors.keys.sorted { ($0.layer, $0.expert, $0.kind) < ($1.layer, $1.expert, $1.kind) }
            .map { Done(layer: $0.layer, expert: $0.expert, kind: $0.kind, error: errors[$0]!, jittered: jitteredKeys.contains($0)) }
    }
    /// Takes the records of an interrupted run (factors it computed, not necessarily written).
    func restore(_ records: [Done]) {
        for r in records {
            let key = Key(layer: r.layer, expert: r.expert, kind: r.kind)
            errors[key] = r.error
            if r.jittered { jitteredKeys.insert(key) }
        }
    }
    /// Jobs per (layer, expert), and each layer's experts in order.
    private var jobs: [Int: [Int: [Job]]] = [:]
    private var ready: [Key: (a: Data, b: Data, aDone: Bool, bDone: Bool)] = [:]
    private var routed: (layer: Int, tokens: [[Int]])?

    init(method: LowRank.Method, cache: CalibrationCache?, model: CausalLM?) {
        self.method = method
        self.cache = cache
        self.model = model
    }

    func add(_ job: Job) { jobs[job.layer, default: [:]][job.expert, default: []].append(job) }

    /// Writes bytes `offset…` of factor A (or B) of `job` into `buffer`.
    func fill(_ job: Job, b: Bool, offset: Int, into buffer: UnsafeMutableRawBufferPointer) {
        lock.lock()
        defer { lock.unlock() }
        let key = job.key
        if ready[key] == nil && failure == nil {
            do { try computeBatch(from: job) } catch { failure = error }
        }
        guard var f = ready[key] else { buffer.initializeMemory(as: UInt8.self, repeating: 0); return }
        let data = b ? f.b : f.a
        data.withUnsafeBytes { src in buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[offset..<(offset + buffer.count)])) }
        if offset + buffer.count == data.count { if b { f.bDone = true } else { f.aDone = true } }
        if f.aDone && f.bDone { written.insert(key) }
        ready[key] = f.aDone && f.bDone ? nil : f
    }

    /// The factors of `job`'s expert and of the next experts of its layer not yet done, one per core.
    private func computeBatch(from job: Job) throws {
        guard let layer = jobs[job.layer] else { return }
        let batch = layer.keys.sorted().filter { $0 >= job.expert && !(layer[$0]!.allSatisfy { ready[$0.key] != nil || written.contains($0.key) }) }
            .prefix(max(1, Compute.threads))
        let lists = method == .svdllm ? try routing(job.layer) : []
        var results = [Result<[(Key, Data, Data, Double, Bool)], any Error>?](repeating: nil, count: batch.count)
        let experts = Array(batch)
        results.withUnsafeMutableBufferPointer { buf in
            let out = SendablePointer(buf.baseAddress!)
            parallelFor(experts.count) { i in
                out[i] = Result { try self.factors(of: layer[experts[i]]!, tokens: lists.isEmpty ? [] : lists[experts[i]]) }
            }
        }
        var finished = 0
        for r in results {
            for (key, a, b, err, jit) in try r!.get() {
                ready[key] = (a, b, false, false)
                errors[key] = err
                if jit { jitteredKeys.insert(key) } else { jitteredKeys.remove(key) }
                finished += 1
            }
        }
        progress?(finished)
    }

    /// One expert's factors for each of its jobs (its Gram matrices made once, SVD-LLM).
    private func factors(of jobs: [Job], tokens: [Int]) throws -> [(Key, Data, Data, Double, Bool)] {
        var grams: (input: [Double], mid: [Double])? = nil
        var whitenings: [Bool: LowRank.Whitening] = [:]   // keyed by "is the intermediate activation"
        return try jobs.map { job in
            let w = try job.matrices.matrix(job.expert, job.kind)
            let (a, bm): (Tensor, Tensor)
            var jit = false
            if method == .svdllm {
                if grams == nil { grams = try gram(job.layer, job.expert, tokens: tokens) }
                let mid = job.kind == "down"
                let white = try whitenings[mid] ?? LowRank.whitening(gram: mid ? grams!.mid : grams!.input, n: w.shape[1])
                whitenings[mid] = white
                (a, bm) = try LowRank.svdLLMFactors(w, whitening: white, rank: job.rank)
                jit = white.jittered
            } else {
                (a, bm) = try LowRank.svdFactors(w, rank: job.rank)
            }
            func bytes(_ t: Tensor) -> Data {
                var d = Data(count: t.count * job.dtype.byteSize)
                d.withUnsafeMutableBytes { Convert.fromFloat(t.data, count: t.count, dtype: job.dtype, into: $0.baseAddress!) }
                return d
            }
            return (job.key, bytes(a), bytes(bm), LowRank.relativeError(w, a, bm), jit)
        }
    }

    /// Per expert of a MoE layer, the cached calibration tokens the router sent it (in token order).
    private func routing(_ layer: Int) throws -> [[Int]] {
        if let r = routed, r.layer == layer { return r.tokens }
        guard let cache else { throw PruningError.invalid("svdllm needs a calibration cache of this model") }
        let r = try cache.routing(layer)
        var lists = [[Int]](repeating: [], count: cache.manifest.expertsPerLayer[cache.manifest.moeLayers.firstIndex(of: layer) ?? 0])
        for (i, e) in r.experts.enumerated() where Int(e) < lists.count { lists[Int(e)].append(i / r.topK) }
        routed = (layer, lists)
        return lists
    }

    /// Expert `expert`'s Gram matrices, in f64, over the cached calibration tokens routed to it: of its inputs
    /// (what gate and up see) and of its intermediate activation (what down sees).
    private func gram(_ layer: Int, _ expert: Int, tokens: [Int]) throws -> (input: [Double], mid: [Double]) {
        guard let cache, let model else { throw PruningError.invalid("svdllm needs a calibration cache of this model") }
        guard let block = model.layers[layer].feedForward.moe, expert < block.numExperts else {
            throw PruningError.invalid("\(cache.directory.path) does not match the model's MoE layer \(layer)")
        }
        let mlp = block.experts[expert]
        let h = mlp.hiddenSize, inter = mlp.intermediateSize
        let xe = Tensor(zeros: [tokens.count, h])
        let moeIn = try cache.file(layer).weight("moe_in")
        for (r, t) in tokens.enumerated() { moeIn.widenRow(t, into: xe.data + r * h) }
        var gin = [Double](repeating: 0, count: h * h), gmid = [Double](repeating: 0, count: inter * inter)
        if !tokens.isEmpty {
            let g = mlp.gate(xe, parallel: false), u = mlp.up(xe, parallel: false)
            let act = Tensor(zeros: [tokens.count, inter])
            gatedActivation(mlp.activation, gate: g.data, up: u.data, into: act.data, count: act.count)
            gin.withUnsafeMutableBufferPointer { Calibration.gram(xe, into: $0.baseAddress!) }
            gmid.withUnsafeMutableBufferPointer { Calibration.gram(act, into: $0.baseAddress!) }
        }
        return (gin, gmid)
    }
}
