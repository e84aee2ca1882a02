import MoETensor
import MoEModels

/// A model's parameters under logical names that do not depend on the family's checkpoint spelling (see
/// `CausalLM.forEachParameter`: `embed`, `layers.L.attn.q`, `layers.L.moe.experts.E.gate.lora_A`, …).
/// Gradient fixtures use these names.
public enum TrainableParameters {
    /// Every parameter, in model order.
    public static func all(_ model: CausalLM) -> [(name: String, value: Parameter)] {
        var out: [(String, Parameter)] = []
        model.forEachParameter { out.append(($0, $1)) }
        return out
    }

    /// The parameters whose names satisfy `include`, as the f32 tensors training updates. Stored (f16/bf16)
    /// weights are frozen: call `CausalLM.makeTrainable()` first to train them.
    public static func tensors(_ model: CausalLM, where include: (String) -> Bool = { _ in true }) -> [(name: String, tensor: Tensor)] {
        all(model).compactMap { name, v in
            guard include(name) else { return nil }
            guard let t = v.tensor else { preconditionFailure("\(name) is stored in its checkpoint dtype; make the model trainable first") }
            return (name, t)
        }
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
