import Foundation
import MoETensor
import MoEModels

/// Why a compressed model decodes slower than the original, measured: the parts of a decode step (attention
/// projections, routers, the experts a token runs, the LM head) timed on one token in both models, and the
/// part that grew most named in one sentence with its numbers.
enum DecodeProbe {
    /// Decode slower than the original by more than this fraction gets a note.
    static let slowerBy = 0.05

    /// Microseconds per token of each part of a decode step, and the mean time of one expert on one token.
    struct Profile {
        var attention = 0.0, router = 0.0, experts = 0.0, lmHead = 0.0
        var expert = 0.0
        var expertBytes = 0.0
    }

    /// Best of `rounds` batches of `calls` calls, in microseconds per call (the least disturbed by other work).
    static func time(calls: Int = 40, rounds: Int = 5, _ body: () -> Void) -> Double {
        body()
        var best = Double.infinity
        for _ in 0..<rounds {
            let t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<calls { body() }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e3 / Double(calls))
        }
        return best
    }

    /// Both models' parts, measured layer by layer alternately so that machine noise hits them alike.
    static func profiles(_ a: CausalLM, _ b: CausalLM) -> (Profile, Profile) {
        var p = [Profile(), Profile()]
        let models = [a, b]
        let h = a.description.hiddenSize
        func input(_ n: Int) -> Tensor {
            var g = SeededGenerator(seed: UInt64(n))
            return Tensor(shape: [1, n], values: (0..<n).map { _ in Float(g.nextUnit() * 2 - 1) })
        }
        let x = input(h)
        func linear(_ l: any LinearLayer, parallel: Bool) -> Double {
            let y = Tensor(zeros: [1, l.outFeatures]), xl = input(l.inFeatures)
            return time { l.apply(xl.data, rows: 1, into: y.data, ldy: l.outFeatures, parallel: parallel) }
        }
        for l in 0..<min(a.layers.count, b.layers.count) {
            for (i, m) in models.enumerated() {
                let layer = m.layers[l]
                p[i].attention += layer.attention.linears.reduce(0) { $0 + linear($1.layer, parallel: true) }
                guard let block = layer.feedForward.moe else { continue }
                p[i].router += linear(block.router.linear, parallel: true)
                let y = Tensor(zeros: [1, h])
                // Inside a decode step the experts of a token run side by side, each product on one thread.
                let times = block.experts.map { e in time { e.apply(x.data, rows: 1, into: y.data, parallel: false) } }
                let mean = times.reduce(0, +) / Double(max(times.count, 1))
                p[i].experts += Double(block.runExperts) * mean
                p[i].expertBytes += Double(block.experts.reduce(0) { $0 + $1.weightBytes }) / Double(max(block.experts.count, 1))
                p[i].expert += mean
            }
        }
        let moeLayers = Double(max(a.description.moeLayerIndices.count, 1))
        for i in 0..<2 {
            p[i].lmHead = linear(models[i].lmHead, parallel: true)
            p[i].expert /= moeLayers
            p[i].expertBytes /= moeLayers
        }
        return (p[0], p[1])
    }

    /// One sentence: how much slower `model` decodes than `reference` (tok/s measured by the run) and which
    /// part of a decode step grew, with both models' times for it.
    static func explain(label: String, decode: Double, original: Double, model: CausalLM, reference: CausalLM) -> String {
        let (ref, mod) = profiles(reference, model)
        let perToken = 1e6 / decode - 1e6 / original
        var s = String(format: "%@ decodes %.0f%% slower than the original (%.0f vs %.0f tok/s, %.0f µs more per token)", label,
                       100 * (1 - decode / original), decode, original, perToken)
        let parts: [(String, Double, Double)] = [("experts", mod.experts, ref.experts), ("attention projections", mod.attention, ref.attention),
                                                 ("routers", mod.router, ref.router), ("LM head", mod.lmHead, ref.lmHead)]
        let (part, now, was) = parts.max { $0.1 - $0.2 < $1.1 - $1.2 }!
        // A part grew when it takes over a quarter more than the original's: one-token timings on a busy machine move by less.
        guard now - was > max(0.25 * was, 1) else {
            return s + String(format: ", yet no part of its decode step is measurably slower on one token (experts %.1f vs %.1f µs, attention projections %.1f vs %.1f µs, routers %.1f vs %.1f µs, LM head %.1f vs %.1f µs per token, measured here), so the gap is timing noise of a busy machine or lies outside these layers.",
                              mod.experts, ref.experts, mod.attention, ref.attention, mod.router, ref.router, mod.lmHead, ref.lmHead)
        }
        let ranks = lowRankRanks(model)
        if part == "experts", let lo = ranks.min(), let hi = ranks.max() {
            s += String(format: " because its experts are low-rank (rank %@ per projection): each projection is two products, through the rank and back, where the original's is one dense product, and at this size one expert on one token takes %.1f µs against %.1f µs dense while reading %.0f KiB against %.0f KiB (measured here), +%.0f µs per token over the %d MoE layers' top-%d experts",
                        lo == hi ? "\(lo)" : "\(lo)–\(hi)", mod.expert, ref.expert, mod.expertBytes / 1024, ref.expertBytes / 1024,
                        now - was, model.description.moeLayerIndices.count, model.layers.compactMap(\.feedForward.moe).first?.runExperts ?? 0)
        } else {
            s += String(format: " because its %@ take %.1f µs per token against the original's %.1f µs (measured here on one token)", part, now, was)
        }
        // What that part's growth leaves of the measured gap is not in the linear layers' one-token times.
        let share = (now - was) / perToken
        s += share < 0.75 ? String(format: ", %.0f%% of the gap (the rest is not in these layers' one-token times: timing noise of a busy machine).", 100 * max(share, 0)) : "."
        return s
    }

    /// The ranks of the model's low-rank expert projections.
    static func lowRankRanks(_ m: CausalLM) -> [Int] {
        m.layers.compactMap(\.feedForward.moe).flatMap { b in
            b.experts.flatMap { e in e.projections.compactMap { ($0.layer as? LowRankLinear)?.rank } }
        }
    }
}
