import Foundation
import MoETensor

/// AdamW with decoupled weight decay (Loshchilov & Hutter; torch.optim.AdamW's update):
/// m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; θ ← θ − lr·λ·θ − lr·m̂/(√v̂ + ε), with bias-corrected m̂, v̂.
public final class AdamW: @unchecked Sendable {
    public struct Settings: Codable, Sendable, Equatable {
        public var beta1: Float = 0.9
        public var beta2: Float = 0.999
        public var epsilon: Float = 1e-8
        public var weightDecay: Float = 0
        public init() {}
    }

    public let settings: Settings
    public let parameters: [(name: String, tensor: Tensor)]
    public private(set) var m: [Tensor]
    public private(set) var v: [Tensor]
    public private(set) var step = 0

    public init(parameters: [(name: String, tensor: Tensor)], settings: Settings) {
        self.parameters = parameters
        self.settings = settings
        m = parameters.map { Tensor(zeros: $0.tensor.shape) }
        v = parameters.map { Tensor(zeros: $0.tensor.shape) }
    }

    /// One update with learning rate `lr` from the gradients in `g`.
    /// Per-parameter learning-rate multipliers (parameter groups), by index into `parameters`; 1 when absent.
    public var lrScale: [Int: Float] = [:]

    public func update(_ g: Gradients, lr baseLR: Float) {
        step += 1
        let s = settings
        let c1 = 1 - pow(s.beta1, Float(step)), c2 = 1 - pow(s.beta2, Float(step))
        // Every parameter is updated on its own, so the tensors are spread over the cores.
        let params = parameters, ms = m, vs = v, scales = lrScale
        parallelFor(params.count) { i in
            let p = params[i]
            guard let grad = g[p.tensor] else { return }
            let lr = baseLR * (scales[i] ?? 1)
            let decay = 1 - lr * s.weightDecay
            let w = p.tensor.data, gd = grad.data, md = ms[i].data, vd = vs[i].data
            for j in 0..<p.tensor.count {
                let gj = gd[j]
                md[j] = s.beta1 * md[j] + (1 - s.beta1) * gj
                vd[j] = s.beta2 * vd[j] + (1 - s.beta2) * gj * gj
                let mh = md[j] / c1, vh = vd[j] / c2
                w[j] = w[j] * decay - lr * mh / (vh.squareRoot() + s.epsilon)
            }
        }
    }

    /// Restores moments and step count (resuming from a training checkpoint).
    public func restore(step: Int, m: [Tensor], v: [Tensor]) {
        precondition(m.count == parameters.count && v.count == parameters.count, "optimiser state for another parameter set")
        for i in 0..<m.count {
            self.m[i].data.update(from: m[i].data, count: m[i].count)
            self.v[i].data.update(from: v[i].data, count: v[i].count)
        }
        self.step = step
    }
}

/// Linear warm-up then cosine decay to 0 (HF `get_cosine_schedule_with_warmup`).
public struct CosineSchedule: Sendable, Equatable {
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(peak: Float, warmupSteps: Int, totalSteps: Int) {
        self.peak = peak; self.warmupSteps = warmupSteps; self.totalSteps = totalSteps
    }

    /// The learning rate of 0-based step `step`.
    public func rate(_ step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step) / Float(max(1, warmupSteps)) }
        let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
        return peak * Float(max(0, 0.5 * (1 + cos(Double.pi * progress))))
    }
}

/// Scales every gradient so the global L2 norm is at most `maxNorm` (torch.nn.utils.clip_grad_norm_);
/// returns the norm before clipping.
@discardableResult
public func clipGradients(_ g: Gradients, maxNorm: Double) -> Double {
    let norm = g.globalNorm
    if maxNorm > 0 && norm > maxNorm { g.scale(Float(maxNorm / (norm + 1e-6))) }
    return norm
}
