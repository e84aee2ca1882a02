import Foundation
import MoETensor
import MoECheckpoint
import MoEModels

/// LoRA adapters for healing (methods.md §2.6, §3.9): which projections get one, and how they are stored.
public enum LoRA {
    public static let allTargets = ["q", "k", "v", "o", "gate", "up", "down", "router"]

    public struct Settings: Codable, Sendable, Equatable {
        public var rank = 64
        public var alpha: Float = 16
        public var dropout: Float = 0.1
        public var targets: [String] = ["q", "k", "v", "o", "gate", "up", "down", "router"]
        public var seed: UInt64 = 0
        public init() {}
        public var scale: Float { alpha / Float(rank) }
    }

    /// Wraps every targeted projection of `model` in a `LoRALinear` (router: a `Router.adapter`). A is
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
        func wrap(_ l: any LinearLayer, _ kind: String) -> any LinearLayer {
            guard t.contains(kind) else { return l }
            let (a, b) = factors(in: l.inFeatures, out: l.outFeatures)
            return LoRALinear(base: l, a: a, b: b, scale: s.scale, dropout: s.dropout)
        }
        func wrapMLP(_ m: GatedMLP) -> GatedMLP {
            GatedMLP(gate: wrap(m.gate, "gate"), up: wrap(m.up, "up"), down: wrap(m.down, "down"), activation: m.activation)
        }
        for i in model.layers.indices {
            var layer = model.layers[i]
            guard let a = layer.attention as? GroupedQueryAttention else { throw TrainingError.unsupported("LoRA healing supports grouped-query attention") }
            layer.attention = GroupedQueryAttention(q: wrap(a.q, "q"), k: wrap(a.k, "k"), v: wrap(a.v, "v"), o: wrap(a.o, "o"), heads: a.heads,
                                                    kvHeads: a.kvHeads, headDim: a.headDim, rope: a.rope, qkNorm: a.qkNorm, clip: a.clip,
                                                    slidingWindow: a.slidingWindow, scale: a.scale)
            switch layer.feedForward {
            case .dense(let m): layer.feedForward = .dense(wrapMLP(m))
            case .moe(var b):
                if t.contains("router") {
                    let (ra, rb) = factors(in: b.hiddenSize, out: b.numExperts)
                    b.router.adapter = (ra, rb, s.scale)
                }
                b.experts = b.experts.map(wrapMLP)
                if let sh = b.sharedExpert { b.sharedExpert = wrapMLP(sh) }
                layer.feedForward = .moe(b)
            }
            model.layers[i] = layer
        }
        return created
    }

    /// Replaces every adapter by its merge: W + s·B·A for a dense base; for a low-rank base the factors are
    /// concatenated (A' = [A_base | s·B], B' = [B_base; A]), exact at rank r_base + r.
    public static func merge(_ model: CausalLM) {
        func merged(_ l: any LinearLayer) -> any LinearLayer {
            guard let a = l as? LoRALinear else { return l }
            switch a.base {
            case let d as DenseLinear:
                let w = d.weight.copy()
                let ba = matmul(a.b, a.a)
                for i in 0..<w.count { w.data[i] += a.scale * ba.data[i] }
                return DenseLinear(weight: w, bias: d.bias)
            case let r as LowRankLinear:
                let m = r.outFeatures, n = r.inFeatures, r0 = r.rank, r1 = a.rank
                let newA = Tensor(zeros: [m, r0 + r1]), newB = Tensor(zeros: [r0 + r1, n])
                for i in 0..<m {
                    for j in 0..<r0 { newA.data[i * (r0 + r1) + j] = r.a.data[i * r0 + j] }
                    for j in 0..<r1 { newA.data[i * (r0 + r1) + r0 + j] = a.scale * a.b.data[i * r1 + j] }
                }
                (newB.data).update(from: r.b.data, count: r0 * n)
                (newB.data + r0 * n).update(from: a.a.data, count: r1 * n)
                return LowRankLinear(a: newA, b: newB)
            default:
                preconditionFailure("cannot merge LoRA into \(type(of: a.base))")
            }
        }
        func mlp(_ m: GatedMLP) -> GatedMLP { GatedMLP(gate: merged(m.gate), up: merged(m.up), down: merged(m.down), activation: m.activation) }
        for i in model.layers.indices {
            var layer = model.layers[i]
            if let a = layer.attention as? GroupedQueryAttention {
                layer.attention = GroupedQueryAttention(q: merged(a.q), k: merged(a.k), v: merged(a.v), o: merged(a.o), heads: a.heads, kvHeads: a.kvHeads,
                                                        headDim: a.headDim, rope: a.rope, qkNorm: a.qkNorm, clip: a.clip, slidingWindow: a.slidingWindow, scale: a.scale)
            }
            switch layer.feedForward {
            case .dense(let m): layer.feedForward = .dense(mlp(m))
            case .moe(var b):
                if let ad = b.router.adapter {
                    let w = b.router.weight.copy()
                    let ba = matmul(ad.b, ad.a)
                    for j in 0..<w.count { w.data[j] += ad.scale * ba.data[j] }
                    b.router = Router(weight: w, correctionBias: b.router.correctionBias, routing: b.router.routing)
                }
                b.experts = b.experts.map(mlp)
                if let sh = b.sharedExpert { b.sharedExpert = mlp(sh) }
                layer.feedForward = .moe(b)
            }
            model.layers[i] = layer
        }
    }
}
