import MoETensor
import MoEModels

/// Every parameter tensor of a model under a logical name that does not depend on the family's checkpoint
/// spelling: `embed`, `norm`, `lm_head`, `layers.L.input_norm`, `layers.L.post_norm`, `layers.L.attn.{q,k,v,o}`
/// (`.bias`), `layers.L.attn.{q,k}_norm`, `layers.L.mlp.{gate,up,down}`, `layers.L.moe.router`,
/// `layers.L.moe.experts.E.{gate,up,down}`, `layers.L.moe.shared.{gate,up,down}`, `layers.L.moe.shared_gate`.
/// A low-rank projection contributes `<name>.lowrank_a/_b`; a LoRA adapter `<name>.lora_A/_B` and its base;
/// compressed-expert vectors `layers.L.moe.experts.E.ce_{gate,up,mid}`. Gradient fixtures use these names.
public enum TrainableParameters {
    public static func all(_ model: CausalLM) -> [(name: String, tensor: Tensor)] {
        var out: [(String, Tensor)] = [("embed", model.embedding)]
        func linear(_ name: String, _ l: any LinearLayer) {
            switch l {
            case let d as DenseLinear:
                out.append((name, d.weight))
                if let b = d.bias { out.append((name + ".bias", b)) }
            case let r as LowRankLinear:
                out.append((name + ".lowrank_a", r.a))
                out.append((name + ".lowrank_b", r.b))
            case let a as LoRALinear:
                linear(name, a.base)
                out.append((name + ".lora_A", a.a))
                out.append((name + ".lora_B", a.b))
            default:
                preconditionFailure("\(name): \(type(of: l)) has no known parameters")
            }
        }
        func mlp(_ name: String, _ m: GatedMLP) {
            linear(name + ".gate", m.gate)
            linear(name + ".up", m.up)
            linear(name + ".down", m.down)
        }
        for (l, layer) in model.layers.enumerated() {
            let p = "layers.\(l)."
            out.append((p + "input_norm", layer.inputNorm.weight))
            guard let attn = layer.attention as? GroupedQueryAttention else {
                preconditionFailure("training supports grouped-query attention only")
            }
            linear(p + "attn.q", attn.q); linear(p + "attn.k", attn.k); linear(p + "attn.v", attn.v); linear(p + "attn.o", attn.o)
            switch attn.qkNorm {
            case .none: break
            case .perHead(let q, let k), .full(let q, let k):
                out.append((p + "attn.q_norm", q.weight)); out.append((p + "attn.k_norm", k.weight))
            }
            out.append((p + "post_norm", layer.postAttentionNorm.weight))
            switch layer.feedForward {
            case .dense(let m): mlp(p + "mlp", m)
            case .moe(let b):
                out.append((p + "moe.router", b.router.weight))
                if let ad = b.router.adapter { out.append((p + "moe.router.lora_A", ad.a)); out.append((p + "moe.router.lora_B", ad.b)) }
                for (e, x) in b.experts.enumerated() { mlp(p + "moe.experts.\(e)", x) }
                if let s = b.sharedExpert { mlp(p + "moe.shared", s) }
                if let g = b.sharedExpertGate { linear(p + "moe.shared_gate", g) }
                if let ce = b.compressedExperts {
                    for e in 0..<b.numExperts {
                        out.append((p + "moe.experts.\(e).ce_gate", ce.gate[e]))
                        out.append((p + "moe.experts.\(e).ce_up", ce.up[e]))
                        out.append((p + "moe.experts.\(e).ce_mid", ce.mid[e]))
                    }
                }
            }
        }
        out.append(("norm", model.norm.weight))
        if !model.description.tieWordEmbeddings { linear("lm_head", model.lmHead) }
        return out
    }
}

/// Gradient buffers for the trainable tensors, allocated once (so parallel backward passes only read the
/// table) and keyed by tensor identity. Frozen tensors get no buffer and their weight gradients are skipped.
public final class Gradients: @unchecked Sendable {
    private let buffers: [ObjectIdentifier: Tensor]
    /// The buffers in the order the trainable tensors were given (sums over them are then reproducible).
    public let ordered: [Tensor]

    public init(trainable: [Tensor]) {
        var b: [ObjectIdentifier: Tensor] = [:]
        var o: [Tensor] = []
        for t in trainable where b[ObjectIdentifier(t)] == nil {
            let g = Tensor(zeros: t.shape)
            b[ObjectIdentifier(t)] = g
            o.append(g)
        }
        buffers = b
        ordered = o
    }

    /// The gradient buffer of `t`, or nil when `t` is frozen.
    public subscript(_ t: Tensor) -> Tensor? { buffers[ObjectIdentifier(t)] }

    public func zero() { for g in buffers.values { g.data.update(repeating: 0, count: g.count) } }

    /// √Σ g² over every buffer (f64 accumulation).
    public var globalNorm: Double {
        var s = 0.0
        for g in ordered { for i in 0..<g.count { s += Double(g.data[i]) * Double(g.data[i]) } }
        return s.squareRoot()
    }

    public func scale(_ f: Float) { for g in buffers.values { g.scale(f) } }
}
