import Foundation
import MoETensor
import MoECheckpoint
import MoEModels
import MoECalibration

/// Intra-expert low-rank decomposition (MoE-I² stage 2, methods.md §3.8), plain truncated SVD so far:
/// each targeted expert matrix W [m, n] becomes A = U_r·√Σ_r [m, r] and B = √Σ_r·V_rᵀ [r, n], with
/// r = ⌊ρ·m·n/(m+n)⌋ for a kept-parameter fraction ρ (clamped to 1…min(m, n)).
public enum LowRank {
    public static func rank(keep rho: Double, m: Int, n: Int) -> Int {
        max(1, min(min(m, n), Int((rho * Double(m) * Double(n) / Double(m + n)).rounded(.down))))
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
    /// When Cholesky fails (G singular, e.g. an expert that saw fewer tokens than dimensions, or none), G
    /// gets (−λ_min + 1e-6)·I added; with no tokens at all that is 1e-6·I and the result is plain SVD's.
    public static func svdLLMFactors(_ w: Tensor, gram: [Double], rank r: Int) throws -> (a: Tensor, b: Tensor, jittered: Bool) {
        let m = w.shape[0], n = w.shape[1]
        precondition(gram.count == n * n, "Gram \(gram.count) for \(n) inputs")
        var s = gram
        var jittered = false
        do {
            try LinearAlgebra.cholesky64(&s, n: n)
        } catch {
            let lmin = try LinearAlgebra.symmetricEigenvalues64(gram, n: n).first ?? 0
            s = gram
            for i in 0..<n { s[i * n + i] += -min(lmin, 0) + 1e-6 }
            try LinearAlgebra.cholesky64(&s, n: n)
            jittered = true
        }
        // W·S in f64, then SVD in f32.
        let ws = Tensor(zeros: [m, n])
        for i in 0..<m {
            for j in 0..<n {
                var acc = 0.0
                for k in j..<n { acc += Double(w.data[i * n + k]) * s[k * n + j] }   // S lower: S[k, j] = 0 for k < j
                ws.data[i * n + j] = Float(acc)
            }
        }
        let (a, bw) = try svdFactors(ws, rank: r)      // A = U√Σ, bw = √Σ Vᵀ
        var sinv = s
        try LinearAlgebra.invertLower64(&sinv, n: n)
        let b = Tensor(zeros: [r, n])
        for i in 0..<r {
            for j in 0..<n {
                var acc = 0.0
                for k in j..<n { acc += Double(bw.data[i * n + k]) * sinv[k * n + j] }   // S⁻¹ lower too
                b.data[i * n + j] = Float(acc)
            }
        }
        return (a, b, jittered)
    }

    public struct Report: Codable, Sendable {
        public var method: String
        public var keep: Double
        public var matrices: Int
        public var parametersBefore: Int
        public var parametersAfter: Int
        public var relativeError: [String: Double]   // per projection: mean ‖W − AB‖_F / ‖W‖_F
        public var jitteredCholesky = 0
    }

    /// Decomposes the routed experts' `targets` projections (any of "gate", "up", "down") of every MoE
    /// layer and writes the checkpoint atomically; everything else is copied byte for byte.
    public static func decompose(model dir: URL, keep rho: Double, targets: Set<String> = ["gate", "up", "down"],
                                 whitening cache: CalibrationCache? = nil,
                                 output: URL, overwrite: Bool = false, quiet: Bool = false) throws -> Report {
        guard rho > 0, rho <= 1 else { throw PruningError.invalid("--ratio (fraction of expert parameters kept) must be in (0, 1]") }
        let config = try HFConfig(modelDirectory: dir)
        let family = try ModelRegistry.family(for: config)
        let d = try family.describe(config)
        let ckpt = try Checkpoint(directory: dir)
        var replace: [String: (a: Tensor, b: Tensor, dtype: DType)] = [:]
        var before = 0, after = 0, count = 0
        var errSum: [String: Double] = [:], errN: [String: Int] = [:]
        var jittered = 0
        let method = cache == nil ? "svd" : "svdllm"
        let progress = StageProgress("decompose", total: d.moeLayerIndices.count, unit: "layers", quiet: quiet)
        for l in d.moeLayerIndices {
            let p = family.moePrefix(layer: l, in: ckpt)
            guard !ckpt.contains("\(p).experts.gate_up_proj") else {
                throw PruningError.invalid("\(dir.path): fused expert tensors (gate_up_proj) are not decomposed yet; save the model per expert")
            }
            let names = ckpt.contains("\(p).experts.0.w1.weight") ? ["gate": "w1", "up": "w3", "down": "w2"] : ["gate": "gate_proj", "up": "up_proj", "down": "down_proj"]
            for e in 0..<d.layers[l].experts! {
                for t in targets.sorted() {
                    let name = "\(p).experts.\(e).\(names[t]!).weight"
                    guard let info = ckpt.info(name) else { continue }
                    let w = try ckpt.tensor(name)
                    let r = rank(keep: rho, m: w.shape[0], n: w.shape[1])
                    let (a, b): (Tensor, Tensor)
                    if let cache {
                        guard let g = try cache.gram(l, t == "down" ? "gram_mid" : "gram_in", expert: e), g.count == w.shape[1] * w.shape[1] else {
                            throw PruningError.invalid("\(cache.directory.path) has no Gram matrices for layer \(l) expert \(e) (calibrate without --no-grams, on this model)")
                        }
                        let f = try svdLLMFactors(w, gram: g, rank: r)
                        (a, b) = (f.a, f.b)
                        if f.jittered { jittered += 1 }
                    } else {
                        (a, b) = try svdFactors(w, rank: r)
                    }
                    let diff = matmul(a, b)
                    var num = 0.0, den = 0.0
                    for i in 0..<w.count { let x = Double(w.data[i]); let dv = x - Double(diff.data[i]); num += dv * dv; den += x * x }
                    errSum[t, default: 0] += den > 0 ? (num / den).squareRoot() : 0
                    errN[t, default: 0] += 1
                    replace[name] = (a, b, info.dtype)
                    before += w.count
                    after += a.count + b.count
                    count += 1
                }
            }
            progress.advance()
        }
        var entries: [SafeTensorsWriter.Entry] = []
        for name in ckpt.names {
            if let (a, b, dtype) = replace[name] {
                let base = String(name.dropLast(".weight".count))
                entries.append(.init("\(base).lowrank_a", a, dtype: dtype))
                entries.append(.init("\(base).lowrank_b", b, dtype: dtype))
            } else {
                entries.append(try ckpt.rawEntry(name))
            }
        }
        let report = Report(method: method, keep: rho, matrices: count, parametersBefore: before, parametersAfter: after,
                            relativeError: Dictionary(uniqueKeysWithValues: errSum.map { ($0.key, $0.value / Double(max(1, errN[$0.key] ?? 1))) }),
                            jitteredCholesky: jittered)
        try AtomicDirectory.write(output, overwrite: overwrite) { out in
            try SafeTensorsWriter.write(entries, to: out.url("model.safetensors"))
            guard let text = try? String(contentsOfFile: config.path, encoding: .utf8) else { throw PruningError.invalid("\(config.path): cannot read") }
            let section = "{\"method\": \"\(method)\", \"keep\": \(rho), \"targets\": [\(targets.sorted().map { "\"\($0)\"" }.joined(separator: ", "))]}"
            try CheckpointOutput.settingMoEPressEntry(text, key: "low_rank", json: section)
                .write(to: out.url("config.json"), atomically: false, encoding: .utf8)
            try CheckpointOutput.copyCompanions(from: dir, to: out)
            try CheckpointOutput.writeJSON(report, to: out.url("decompose.json"))
        }
        return report
    }
}
