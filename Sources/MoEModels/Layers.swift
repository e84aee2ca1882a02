import MoETensor

/// One parameter of a layer: an f32 tensor that training may update in place, or a matrix read in place in
/// the checkpoint's dtype (f16/bf16 weights, never widened unless a layer is made trainable).
public enum Parameter: @unchecked Sendable {
    case tensor(Tensor)
    case stored(WeightMatrix)

    /// The f32 tensor, when the parameter is one.
    public var tensor: Tensor? { if case .tensor(let t) = self { return t } else { return nil } }
    public var shape: [Int] {
        switch self {
        case .tensor(let t): return t.shape
        case .stored(let w): return w.shape
        }
    }
    public var count: Int { shape.reduce(1, *) }
    /// The values as a new (or, for a tensor, the same) f32 tensor.
    public func float() -> Tensor {
        switch self {
        case .tensor(let t): return t
        case .stored(let w): return w.float()
        }
    }
}

/// A linear map y = x·Wᵀ (+ b). Every family and method sees only this interface, so a new storage kind
/// (dense in any dtype, low-rank factors, a LoRA-wrapped layer, a quantised format) is one new type: it says
/// how it multiplies, how its input gradient flows back, what its parameters are, what dense matrix it
/// stands for and how an adapter merges into it.
public protocol LinearLayer: Sendable {
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    var parameterCount: Int { get }
    /// Bytes of weights read by one application (in their stored dtype): what a memory-bound pass costs.
    var weightBytes: Int { get }
    /// y[rows, out] (row stride ldy) = x[rows, in] · Wᵀ (+ b). `parallel` lets one large product use
    /// every core; callers already inside a parallel loop pass false.
    func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, parallel: Bool)
    /// The input gradient: dx[rows, in] (row stride ldx) = dy[rows, out] · W, or += with `accumulate`.
    func applyTransposed(_ dy: UnsafePointer<Float>, rows: Int, into dx: UnsafeMutablePointer<Float>, ldx: Int, accumulate: Bool, parallel: Bool)
    /// The layer's parameters, named by the suffix a checkpoint gives them after the layer's name: "" (the
    /// weight), ".bias", ".lowrank_a", ".lowrank_b", ".lora_A", ".lora_B" (a LoRA layer lists its base's first).
    func forEachParameter(_ body: (_ suffix: String, _ value: Parameter) -> Void)
    /// W as a new f32 matrix [out, in] (the product of factors; base plus adapter for LoRA).
    func denseWeight() -> Tensor
    /// This map plus scale·B·A (B [out, r], A [r, in]): merging a LoRA adapter.
    func adding(_ b: Tensor, _ a: Tensor, scale: Float) -> any LinearLayer
    /// The same map with every parameter an f32 tensor (a copy where it was stored in f16/bf16), for training.
    func trainable() -> any LinearLayer
}

extension LinearLayer {
    public func callAsFunction(_ x: Tensor, parallel: Bool = true) -> Tensor {
        precondition(x.cols == inFeatures, "linear: input \(x.shape) for a \(outFeatures)×\(inFeatures) layer")
        var shape = Array(x.shape.dropLast())
        shape.append(outFeatures)
        let y = Tensor(zeros: shape)
        apply(x.data, rows: x.rows, into: y.data, ldy: outFeatures, parallel: parallel)
        return y
    }

    /// The parameters as (suffix, value) pairs, in order.
    public var parameters: [(suffix: String, value: Parameter)] {
        var out: [(String, Parameter)] = []
        forEachParameter { out.append(($0, $1)) }
        return out
    }
}

/// A dense weight [out, in] in its stored dtype, with an optional f32 bias [out].
public struct DenseLinear: LinearLayer {
    public let weight: WeightMatrix
    public let bias: Tensor?

    public init(weight: WeightMatrix, bias: Tensor? = nil) {
        precondition(bias == nil || bias!.count == weight.rows, "bias \(bias!.shape) for weight \(weight.shape)")
        self.weight = weight
        self.bias = bias
    }

    /// An f32 weight tensor [out, in].
    public init(weight: Tensor, bias: Tensor? = nil) {
        precondition(weight.rank == 2, "DenseLinear weight must be 2-D, got \(weight.shape)")
        self.init(weight: WeightMatrix(weight), bias: bias)
    }

    public var inFeatures: Int { weight.cols }
    public var outFeatures: Int { weight.rows }
    public var parameterCount: Int { weight.count + (bias?.count ?? 0) }
    public var weightBytes: Int { weight.byteCount + (bias?.count ?? 0) * 4 }

    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, parallel: Bool) {
        weight.multiply(x, m: rows, into: y, ldy: ldy, parallel: parallel)
        if let bias {
            for r in 0..<rows { addInPlace(y + r * ldy, bias.data, count: outFeatures) }
        }
    }

    public func applyTransposed(_ dy: UnsafePointer<Float>, rows: Int, into dx: UnsafeMutablePointer<Float>, ldx: Int, accumulate: Bool, parallel: Bool) {
        weight.multiplyTransposed(dy, m: rows, into: dx, ldx: ldx, accumulate: accumulate, parallel: parallel)
    }

    public func forEachParameter(_ body: (String, Parameter) -> Void) {
        body("", weight.tensor.map { .tensor($0) } ?? .stored(weight))
        if let bias { body(".bias", .tensor(bias)) }
    }

    public func denseWeight() -> Tensor { weight.float() }

    public func adding(_ b: Tensor, _ a: Tensor, scale: Float) -> any LinearLayer {
        let w = weight.float()
        let ba = matmul(b, a)
        for i in 0..<w.count { w.data[i] += scale * ba.data[i] }
        return DenseLinear(weight: w, bias: bias)
    }

    public func trainable() -> any LinearLayer {
        weight.tensor != nil ? self : DenseLinear(weight: weight.float(), bias: bias)
    }
}

/// A decoder layer's or the final norm: RMSNorm (every family but one) or LayerNorm with a bias (Phi-MoE's
/// `nn.LayerNorm`).
public enum Norm: Sendable {
    case rms(RMSNorm)
    /// Mean subtracted, biased variance, scale and bias.
    case layer(weight: Tensor, bias: Tensor, eps: Float)

    public var weight: Tensor {
        switch self {
        case .rms(let n): return n.weight
        case .layer(let w, _, _): return w
        }
    }
    public var bias: Tensor? { if case .layer(_, let b, _) = self { return b } else { return nil } }
    public var dim: Int { weight.count }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        switch self {
        case .rms(let n): return n(x)
        case .layer(let w, let b, let eps): return layerNorm(x, weight: w, bias: b, eps: eps)
        }
    }
}

/// RMSNorm with a learned scale (HF `*RMSNorm`).
public struct RMSNorm: Sendable {
    public let weight: Tensor
    public let eps: Float
    public init(weight: Tensor, eps: Float) {
        self.weight = weight
        self.eps = eps
    }
    public var dim: Int { weight.count }
    public func callAsFunction(_ x: Tensor) -> Tensor { rmsNorm(x, weight: weight, eps: eps) }
    /// Normalises `rows` vectors of `dim` values in place, each starting `stride` apart.
    public func applyInPlace(_ x: UnsafeMutablePointer<Float>, rows: Int, stride: Int) {
        if stride == dim {
            rmsNorm(x, rows: rows, cols: dim, weight: weight.data, eps: eps, into: x)
        } else {
            for r in 0..<rows { rmsNorm(x + r * stride, rows: 1, cols: dim, weight: weight.data, eps: eps, into: x + r * stride) }
        }
    }
}

/// The gated MLP every supported family uses for experts, shared experts and dense layers:
/// down( act(gate(x)) ⊙ up(x) ).
public struct GatedMLP: Sendable {
    public let gate: any LinearLayer
    public let up: any LinearLayer
    public let down: any LinearLayer
    public let activation: Activation

    public init(gate: any LinearLayer, up: any LinearLayer, down: any LinearLayer, activation: Activation) {
        precondition(gate.outFeatures == up.outFeatures && down.inFeatures == gate.outFeatures
                     && gate.inFeatures == up.inFeatures && down.outFeatures == gate.inFeatures,
                     "GatedMLP shapes do not chain")
        self.gate = gate
        self.up = up
        self.down = down
        self.activation = activation
    }

    public var hiddenSize: Int { gate.inFeatures }
    public var intermediateSize: Int { gate.outFeatures }
    public var parameterCount: Int { gate.parameterCount + up.parameterCount + down.parameterCount }
    public var weightBytes: Int { gate.weightBytes + up.weightBytes + down.weightBytes }
    /// The three projections by kind ("gate", "up", "down").
    public var projections: [(kind: String, layer: any LinearLayer)] { [("gate", gate), ("up", up), ("down", down)] }

    /// The same MLP with each projection replaced by `f(kind, projection)`.
    public func mapProjections(_ f: (String, any LinearLayer) throws -> any LinearLayer) rethrows -> GatedMLP {
        GatedMLP(gate: try f("gate", gate), up: try f("up", up), down: try f("down", down), activation: activation)
    }

    /// Rows an MLP processes at once: its intermediate activations (2 · rows · intermediate floats) stay bounded
    /// however long the batch (a shared or dense expert over a long layer-major chunk). Rows are independent, so
    /// blocking changes no result.
    public static let rowBlock = 512

    /// y[rows, hidden] = MLP(x[rows, hidden]).
    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, parallel: Bool) {
        let inter = intermediateSize, h = hiddenSize
        let block = min(rows, Self.rowBlock)
        let g = Tensor(zeros: [block, inter]), u = Tensor(zeros: [block, inter])
        var r0 = 0
        while r0 < rows {
            let n = min(block, rows - r0)
            gate.apply(x + r0 * h, rows: n, into: g.data, ldy: inter, parallel: parallel)
            up.apply(x + r0 * h, rows: n, into: u.data, ldy: inter, parallel: parallel)
            gatedActivation(activation, gate: g.data, up: u.data, into: g.data, count: n * inter)
            down.apply(g.data, rows: n, into: y + r0 * h, ldy: h, parallel: parallel)
            r0 += n
        }
    }

    /// The compressed-experts form: separate gate and up inputs, and the intermediate activation scaled
    /// elementwise by `midScale` [rows, intermediate] before the down projection.
    public func apply(gateInput: UnsafePointer<Float>, upInput: UnsafePointer<Float>, midScale: UnsafePointer<Float>, rows: Int,
                      into y: UnsafeMutablePointer<Float>, parallel: Bool) {
        let inter = intermediateSize
        let g = Tensor(zeros: [rows, inter]), u = Tensor(zeros: [rows, inter])
        gate.apply(gateInput, rows: rows, into: g.data, ldy: inter, parallel: parallel)
        up.apply(upInput, rows: rows, into: u.data, ldy: inter, parallel: parallel)
        gatedActivation(activation, gate: g.data, up: u.data, into: g.data, count: rows * inter)
        for i in 0..<(rows * inter) { g.data[i] *= midScale[i] }
        down.apply(g.data, rows: rows, into: y, ldy: hiddenSize, parallel: parallel)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = Tensor(zeros: x.shape)
        apply(x.data, rows: x.rows, into: y.data, parallel: true)
        return y
    }
}
