import Foundation
import MoETensor

/// How a router turns logits into (expert, weight) pairs — every family's routing is one value of this
/// struct, so methods reason about properties (renormalisation, groups, scaling), never family names.
public struct Routing: Sendable, Codable, Equatable {
    public enum Scoring: String, Sendable, Codable {
        case softmax, sigmoid
        /// Phi-MoE's sparsemixer in its inference form (top-2): the best expert, weighted by the softmax over the
        /// experts whose logits are within 2·`jitterEpsilon` (relative) of it; then the best of the others, weighted
        /// by the softmax over those within the same distance of that one.
        case sparseMixer = "sparsemixer"
    }
    /// How a group of experts is scored for group-limited routing.
    public enum GroupScore: String, Sendable, Codable {
        /// DeepSeek-V2 `group_limited_greedy`: the best score in the group.
        case max
        /// DeepSeek-V3 `noaux_tc`: the sum of the group's two best (bias-corrected) scores.
        case top2Sum
    }

    public var scoring: Scoring = .softmax
    public var topK: Int
    /// Divide the selected weights by their sum (Mixtral always; Qwen/OLMoE/DeepSeek by `norm_topk_prob`).
    public var normalizeTopK: Bool
    /// Added to the denominator when normalising (DeepSeek-V3 uses 1e-20).
    public var normalizationEpsilon: Float = 0
    /// Multiplies the final weights (DeepSeek `routed_scaling_factor`).
    public var scalingFactor: Float = 1
    /// Group-limited routing: experts are split into `groups` equal groups and only the best
    /// `topKGroups` groups may be chosen.
    public var groups: Int = 1
    public var topKGroups: Int = 1
    public var groupScore: GroupScore = .max
    /// Sparsemixer's `router_jitter_noise` (the relative logit distance that counts as a tie).
    public var jitterEpsilon: Float = 0

    public init(scoring: Scoring = .softmax, topK: Int, normalizeTopK: Bool, normalizationEpsilon: Float = 0,
                scalingFactor: Float = 1, groups: Int = 1, topKGroups: Int = 1, groupScore: GroupScore = .max, jitterEpsilon: Float = 0) {
        self.scoring = scoring
        self.topK = topK
        self.normalizeTopK = normalizeTopK
        self.normalizationEpsilon = normalizationEpsilon
        self.scalingFactor = scalingFactor
        self.groups = groups
        self.topKGroups = topKGroups
        self.groupScore = groupScore
        self.jitterEpsilon = jitterEpsilon
    }
}

/// The router of an MoE block: logits = x · Wᵀ (any `LinearLayer`: the stored weight, or the weight
/// with a LoRA adapter while healing), then `Routing`. `correctionBias` (DeepSeek-V3's
/// `e_score_correction_bias`) shifts the scores used to choose experts but not the weights.
public struct Router: Sendable {
    public var linear: any LinearLayer
    public let correctionBias: Tensor?
    public var routing: Routing

    public init(linear: any LinearLayer, correctionBias: Tensor? = nil, routing: Routing) {
        self.linear = linear
        self.correctionBias = correctionBias
        self.routing = routing
    }

    public init(weight: Tensor, correctionBias: Tensor? = nil, routing: Routing) {
        self.init(linear: DenseLinear(weight: weight), correctionBias: correctionBias, routing: routing)
    }

    public var numExperts: Int { linear.outFeatures }
    public var hiddenSize: Int { linear.inFeatures }

    /// Per token: the chosen experts in decreasing weight (torch.topk's order; with a correction bias, the
    /// chosen ones re-sorted by weight) and their weights, plus the raw logits [T, E].
    public struct Decision: Sendable {
        public let logits: Tensor
        public let experts: [Int32]   // [T * topK]
        public let weights: [Float]   // [T * topK]
        public let topK: Int
    }

    public func route(_ x: Tensor, parallel: Bool = true) -> Decision {
        let logits = linear.callAsFunction(x, parallel: parallel)
        return decide(logits: logits)
    }

    /// Routing from given logits (methods that mask experts call this with edited logits).
    public func decide(logits: Tensor, allowed: [Bool]? = nil) -> Decision {
        let t = logits.rows, e = logits.cols, k = routing.topK
        var experts = [Int32](repeating: 0, count: t * k)
        var weights = [Float](repeating: 0, count: t * k)
        var scores = [Float](repeating: 0, count: e)
        var choice = [Float](repeating: 0, count: e)
        let slots = max(k, routing.topKGroups, 2)
        var topIndex = [Int32](repeating: 0, count: slots), topValue = [Float](repeating: 0, count: slots)
        for i in 0..<t {
            let row = logits.data + i * e
            if routing.scoring == .sparseMixer {
                sparseMixer(row, count: e, allowed: allowed, experts: &experts, weights: &weights, at: i * k)
                continue
            }
            switch routing.scoring {
            case .softmax:
                // A disallowed expert's logit is −∞ before the softmax (as if its router row were deleted), so
                // without renormalisation the remaining weights grow exactly as after pruning.
                for j in 0..<e { scores[j] = (allowed?[j] ?? true) ? row[j] : -.infinity }
                scores.withUnsafeMutableBufferPointer { softmaxInPlace($0.baseAddress!, count: e) }
            case .sigmoid:
                for j in 0..<e { scores[j] = (allowed?[j] ?? true) ? sigmoid(row[j]) : 0 }
            case .sparseMixer:
                preconditionFailure("handled above")
            }
            for j in 0..<e { choice[j] = scores[j] + (correctionBias?.data[j] ?? 0) }
            if let allowed { for j in 0..<e where !allowed[j] { choice[j] = -.infinity } }
            if routing.groups > 1 {
                let per = e / routing.groups
                var groupScores = [Float](repeating: 0, count: routing.groups)
                for g in 0..<routing.groups {
                    let n = choice.withUnsafeBufferPointer { c in
                        topK(c.baseAddress! + g * per, count: per, k: routing.groupScore == .top2Sum ? min(2, per) : 1,
                             indices: &topIndex, values: &topValue)
                    }
                    groupScores[g] = topValue[0..<n].reduce(0, +)
                }
                let n = groupScores.withUnsafeBufferPointer {
                    topK($0.baseAddress!, count: routing.groups, k: routing.topKGroups, indices: &topIndex, values: &topValue)
                }
                var kept = [Bool](repeating: false, count: routing.groups)
                for g in 0..<n { kept[Int(topIndex[g])] = true }
                for j in 0..<e where !kept[j / per] { choice[j] = -.infinity }
            }
            let n = choice.withUnsafeBufferPointer { topK($0.baseAddress!, count: e, k: k, indices: &topIndex, values: &topValue) }
            if correctionBias != nil {
                // Slots in decreasing weight (the bias only chose them): compressed experts' "first K" are then
                // the K largest weights, as for every other router. Stable, so ties keep the choice order.
                let order = (0..<n).sorted { scores[Int(topIndex[$0])] > scores[Int(topIndex[$1])] || (scores[Int(topIndex[$0])] == scores[Int(topIndex[$1])] && $0 < $1) }
                let chosen = order.map { topIndex[$0] }
                for (slot, c) in chosen.enumerated() { topIndex[slot] = c }
            }
            var sum: Float = 0
            for slot in 0..<n {
                let c = Int(topIndex[slot])
                experts[i * k + slot] = Int32(c)
                weights[i * k + slot] = scores[c]
                sum += scores[c]
            }
            if routing.normalizeTopK {
                let denom = sum + routing.normalizationEpsilon
                for s in 0..<k { weights[i * k + s] /= denom }
            }
            if routing.scalingFactor != 1 {
                for s in 0..<k { weights[i * k + s] *= routing.scalingFactor }
            }
        }
        return Decision(logits: logits, experts: experts, weights: weights, topK: k)
    }

    private func sparseMixer(_ row: UnsafePointer<Float>, count e: Int, allowed: [Bool]?, experts: inout [Int32], weights: inout [Float], at base: Int) {
        // Slots in decreasing weight, as every router's (the second choice can outweigh the first when the first
        // shares its softmax with near-ties); equal weights keep the choice order.
        let slots = sparseMixerSlots(row, count: e, allowed: allowed).map { s in (s.expert, s.probabilities[s.members.firstIndex(of: s.expert)!]) }
        let ordered = slots.count == 2 && slots[1].1 > slots[0].1 ? [slots[1], slots[0]] : slots
        for (slot, s) in ordered.enumerated() {
            experts[base + slot] = Int32(s.0)
            weights[base + slot] = s.1
        }
    }

    /// transformers' `sparsemixer` (eval mode) on one token's logits, slot by slot: the chosen expert, the experts
    /// its softmax runs over (logits within 2·ε, relative, of the chosen one's; earlier choices excluded) and their
    /// probabilities; the slot's weight is the chosen one's probability. A disallowed expert is a removed router row.
    public func sparseMixerSlots(_ row: UnsafePointer<Float>, count e: Int, allowed: [Bool]?) -> [(expert: Int, members: [Int], probabilities: [Float])] {
        let eps = 2 * routing.jitterEpsilon
        var excluded = [Bool](repeating: false, count: e)
        if let allowed { for j in 0..<e where !allowed[j] { excluded[j] = true } }
        var out: [(Int, [Int], [Float])] = []
        for _ in 0..<min(2, routing.topK) {
            // The best remaining logit (first on ties, as torch.max), then the softmax over the logits near it.
            var best = -1
            for j in 0..<e where !excluded[j] && (best < 0 || row[j] > row[best]) { best = j }
            guard best >= 0 else { break }
            let m = row[best]
            var members: [Int] = [], p: [Float] = []
            var sum: Float = 0
            for j in 0..<e where !excluded[j] {
                let factor = max(abs(row[j]), m)
                if (m - row[j]) / factor > eps { continue }
                members.append(j)
                p.append(exp(row[j] - m))
                sum += p.last!
            }
            out.append((best, members, p.map { $0 / sum }))
            excluded[best] = true
        }
        return out
    }
}
