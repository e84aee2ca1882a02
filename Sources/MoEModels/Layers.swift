import MoETensor

/// A linear map y = x·Wᵀ (+ b). A protocol so that factorised (low-rank) or quantised weights can
/// stand where a dense matrix does; every family and method sees only this interface.
public protocol LinearLayer: Sendable {
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    var parameterCount: Int { get }
    /// y[rows, out] (row stride ldy) = x[rows, in] · Wᵀ (+ b). `parallel` lets one large product use
    /// every core; callers already inside a parallel loop pass false.
    func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, parallel: Bool)
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
}

/// A dense weight [out, in] with an optional bias [out].
public struct DenseLinear: LinearLayer {
    public let weight: Tensor
    public let bias: Tensor?

    public init(weight: Tensor, bias: Tensor? = nil) {
        precondition(weight.rank == 2, "DenseLinear weight must be 2-D, got \(weight.shape)")
        precondition(bias == nil || bias!.count == weight.shape[0], "bias \(bias!.shape) for weight \(weight.shape)")
        self.weight = weight
        self.bias = bias
    }

    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }
    public var parameterCount: Int { weight.count + (bias?.count ?? 0) }

    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, parallel: Bool) {
        if parallel {
            linear(x, rows: rows, in: inFeatures, weight: weight.data, out: outFeatures, into: y, ldy: ldy)
        } else {
            BLAS.gemm(transB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures,
                      b: weight.data, ldb: inFeatures, c: y, ldc: ldy)
        }
        if let bias {
            for r in 0..<rows { addInPlace(y + r * ldy, bias.data, count: outFeatures) }
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

    /// y[rows, hidden] = MLP(x[rows, hidden]); `scratch` needs 2·rows·intermediate floats.
    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, parallel: Bool) {
        let inter = intermediateSize
        let g = Tensor(zeros: [rows, inter]), u = Tensor(zeros: [rows, inter])
        gate.apply(x, rows: rows, into: g.data, ldy: inter, parallel: parallel)
        up.apply(x, rows: rows, into: u.data, ldy: inter, parallel: parallel)
        gatedActivation(activation, gate: g.data, up: u.data, into: g.data, count: rows * inter)
        down.apply(g.data, rows: rows, into: y, ldy: hiddenSize, parallel: parallel)
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
