import Foundation
import MoETensor
import MoECheckpoint
import MoEModels

/// LoRA adapters for healing (methods.md §2.6, §3.9): which projections get one, and how they are stored.
public enum LoRA {
    /// Projection kinds: attention (q, k, v, o; DeepSeek's latent attention q, q_a, q_b, kv_a, kv_b, o), MLP
    /// and expert projections (gate, up, down), the router. A kind a model does not have adapts nothing.
    public static let allTargets = ["q", "k", "v", "o", "q_a", "q_b", "kv_a", "kv_b", "gate", "up", "down", "router"]

    public struct Settings: Codable, Sendable, Equatable {
        public var rank = 64
        public var alpha: Float = 16
        public var dropout: Float = 0.1
        public var targets: [String] = LoRA.allTargets
        public var seed: UInt64 = 0
        public init() {}
        public var scale: Float { alpha / Float(rank) }
    }

    /// Wraps every targeted projection of `model` (the router's too) in a `LoRALinear`; a low-rank projection
    /// (A·B) instead gets one adapter on each factor (`AdaptedLowRankLinear`, SVD-LLM's update), so merging keeps
    /// its rank. A is
    /// PEFT's default kaiming-uniform(a = √5), i.e. U(±1/√in), from a seeded generator; B is zero, so the
    /// adapted model starts equal to the base. Returns the adapter tensors (A and B of each) in model order.
    @discardableResult
    public static func attach(to model: CausalLM, _ s: Settings) throws -> [Tensor] {
        let unknown = Set(s.targets).subtracting(allTargets)
        guard unknown.isEmpty else { throw TrainingError.invalid("unknown LoRA targets \(unknown.sorted()); use \(allTargets.joined(separator: ","))") }
        guard s.rank >= 1 else { throw TrainingError.invalid("--lora-rank must be at least 1") }
        let t = Set(s.targets)
        var rng = SeededGenerator(seed: s.seed)
        var created: [Tensor] = []
        func factors(in n: Int, out m: Int) -> (Tensor, Tensor) {
            let bound = 1 / Double(n).squareRoot()
            let a = Tensor(shape: [s.rank, n], values: (0..<(s.rank * n)).map { _ in Float((rng.nextUnit() * 2 - 1) * bound) })
            let b = Tensor(zeros: [m, s.rank])
            created.append(a); created.append(b)
            return (a, b)
        }
        // Logical names end in the projection kind (…attn.q, …experts.3.gate, …moe.router); model order fixes
        // the order the factors are drawn in.
        model.replaceLinears { name, l in
            let kind = String(name.split(separator: ".").last!)
            guard t.contains(kind), !name.hasPrefix("lm_head") else { return l }
            let dropout: Float = kind == "router" ? 0 : s.dropout
            if let lr = l as? LowRankLinear {
                let (a1, b1) = factors(in: lr.inFeatures, out: lr.rank)
                let (a2, b2) = factors(in: lr.rank, out: lr.outFeatures)
                return AdaptedLowRankLinear(first: LoRALinear(base: DenseLinear(weight: lr.b), a: a1, b: b1, scale: s.scale, dropout: dropout),
                                            second: LoRALinear(base: DenseLinear(weight: lr.a, bias: lr.bias), a: a2, b: b2, scale: s.scale, dropout: dropout))
            }
            let (a, b) = factors(in: l.inFeatures, out: l.outFeatures)
            return LoRALinear(base: l, a: a, b: b, scale: s.scale, dropout: dropout)
        }
        return created
    }

    /// Replaces every adapter by its merge: W + s·B·A for a dense base; each factor's own adapter for a low-rank
    /// one (same rank). A LoRA wrapped around a low-rank base by hand merges by concatenating factors
    /// (A' = [A_base | s·B], B' = [B_base; A]), exact at rank r_base + r.
    public static func merge(_ model: CausalLM) {
        model.replaceLinears { _, l in (l as? LoRALinear)?.merged() ?? (l as? AdaptedLowRankLinear)?.merged() ?? l }
    }
}
