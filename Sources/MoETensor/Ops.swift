import Foundation

// Elementwise and row-wise ops a transformer needs. Rows are the last dimension. Each reduction
// accumulates in Float, as torch does for f32 inputs on CPU.

@inline(__always) public func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { y[i] += x[i] }
}

/// y += alpha · x
@inline(__always) public func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count { y[i] += alpha * x[i] }
}

extension Tensor {
    /// self += other (same number of elements).
    public func add(_ other: Tensor) {
        precondition(count == other.count, "add: \(shape) vs \(other.shape)")
        addInPlace(data, other.data, count: count)
    }

    public func scale(_ s: Float) {
        for i in 0..<count { data[i] *= s }
    }
}

/// RMSNorm as HF computes it in f32: x · rsqrt(mean(x²) + eps) · weight.
public func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float) -> Tensor {
    let y = Tensor(zeros: x.shape)
    rmsNorm(x.data, rows: x.rows, cols: x.cols, weight: weight?.data, eps: eps, into: y.data)
    return y
}

public func rmsNorm(_ x: UnsafePointer<Float>, rows: Int, cols: Int, weight: UnsafePointer<Float>?, eps: Float,
                    into y: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        let xr = x + r * cols, yr = y + r * cols
        var ss: Float = 0
        for i in 0..<cols { ss += xr[i] * xr[i] }
        let inv = 1 / (ss / Float(cols) + eps).squareRoot()
        if let weight {
            for i in 0..<cols { yr[i] = weight[i] * (xr[i] * inv) }
        } else {
            for i in 0..<cols { yr[i] = xr[i] * inv }
        }
    }
}

/// LayerNorm over the last dimension (biased variance), with optional affine parameters.
public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float) -> Tensor {
    let y = Tensor(zeros: x.shape)
    let c = x.cols
    for r in 0..<x.rows {
        let xr = x.data + r * c, yr = y.data + r * c
        var mean: Float = 0
        for i in 0..<c { mean += xr[i] }
        mean /= Float(c)
        var v: Float = 0
        for i in 0..<c { let d = xr[i] - mean; v += d * d }
        let inv = 1 / (v / Float(c) + eps).squareRoot()
        for i in 0..<c {
            var o = (xr[i] - mean) * inv
            if let weight { o *= weight.data[i] }
            if let bias { o += bias.data[i] }
            yr[i] = o
        }
    }
    return y
}

/// Numerically stable softmax of each row, in place.
public func softmaxRowsInPlace(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
    for r in 0..<rows { softmaxInPlace(x + r * cols, count: cols) }
}

@inline(__always) public func softmaxInPlace(_ x: UnsafeMutablePointer<Float>, count: Int) {
    VectorMath.softmaxInPlace(x, count: count)
}

public func softmax(_ x: Tensor) -> Tensor {
    let y = x.copy()
    softmaxRowsInPlace(y.data, rows: y.rows, cols: y.cols)
    return y
}

@inline(__always) public func sigmoid(_ v: Float) -> Float { 1 / (1 + expf(-v)) }
@inline(__always) public func silu(_ v: Float) -> Float { v / (1 + expf(-v)) }
/// GELU with the exact erf form (torch's default "gelu").
@inline(__always) public func geluErf(_ v: Float) -> Float { 0.5 * v * (1 + erff(v * 0.70710678118654752)) }
/// GELU with the tanh approximation ("gelu_pytorch_tanh", "gelu_new").
@inline(__always) public func geluTanh(_ v: Float) -> Float {
    0.5 * v * (1 + tanhf(0.7978845608028654 * (v + 0.044715 * v * v * v)))
}

/// Activation functions named as HF configs name them (`hidden_act`).
public enum Activation: Sendable, Equatable, Codable, CustomStringConvertible {
    case silu, swish, gelu, geluTanh, geluNew, relu
    /// gpt-oss's gated unit: gate clamped above at `limit`, up clamped to ±`limit`, out = (up + 1) · gate · σ(α · gate).
    case clampedSwiGLU(alpha: Float, limit: Float)

    static let names: [(String, Activation)] = [("silu", .silu), ("swish", .swish), ("gelu", .gelu), ("gelu_pytorch_tanh", .geluTanh),
                                                 ("gelu_new", .geluNew), ("relu", .relu)]

    public init(hfName: String) throws {
        guard let a = Self.names.first(where: { $0.0 == hfName })?.1 else {
            throw TensorError.unsupported("hidden_act \"\(hfName)\" (supported: silu, gelu, gelu_pytorch_tanh, gelu_new, relu)")
        }
        self = a
    }

    /// The HF name, or `clamped_swiglu(alpha=…, limit=…)`.
    public var description: String {
        if case .clampedSwiGLU(let a, let l) = self { return "clamped_swiglu(alpha=\(a), limit=\(l))" }
        return Self.names.first { $0.1 == self }!.0
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        if text.hasPrefix("clamped_swiglu(") {
            let nums = text.split(whereSeparator: { !"0123456789.-e".contains($0) }).compactMap { Float($0) }
            guard nums.count == 2 else { throw TensorError.unsupported("activation \"\(text)\"") }
            self = .clampedSwiGLU(alpha: nums[0], limit: nums[1])
        } else {
            self = try Activation(hfName: text)
        }
    }

    /// act(v) for the ungated activations (the gate's part of `clampedSwiGLU` for that one).
    @inline(__always) public func callAsFunction(_ v: Float) -> Float {
        switch self {
        case .silu, .swish: return MoETensor.silu(v)
        case .gelu: return MoETensor.geluErf(v)
        case .geluTanh, .geluNew: return MoETensor.geluTanh(v)
        case .relu: return max(v, 0)
        case .clampedSwiGLU(let alpha, let limit): let g = min(v, limit); return g / (1 + expf(-alpha * g))
        }
    }
}

/// out[i] = act(gate[i]) · up[i], the gated linear unit of SwiGLU-style experts (gpt-oss: with its clamps and up + 1).
@inline(__always) public func gatedActivation(
    _ act: Activation, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int
) {
    switch act {
    case .silu, .swish: VectorMath.siluGLU(gate: gate, up: up, into: out, count: count)
    case .clampedSwiGLU(_, let limit):
        for i in 0..<count { out[i] = act(gate[i]) * (min(max(up[i], -limit), limit) + 1) }
    default: for i in 0..<count { out[i] = act(gate[i]) * up[i] }
    }
}

/// The k largest values of `x` with their indices, largest first. Ties keep the lower index first
/// (torch.topk's CPU order for distinct values; exact ties are measure-zero in practice).
public func topK(_ x: UnsafePointer<Float>, count: Int, k: Int) -> [(index: Int, value: Float)] {
    precondition(k <= count, "topK: k=\(k) > \(count)")
    var indices = [Int32](repeating: 0, count: max(k, 1)), values = [Float](repeating: 0, count: max(k, 1))
    let n = indices.withUnsafeMutableBufferPointer { i in values.withUnsafeMutableBufferPointer { v in topK(x, count: count, k: k, indices: i.baseAddress!, values: v.baseAddress!) } }
    return (0..<n).map { (Int(indices[$0]), values[$0]) }
}

/// `topK` into caller-owned buffers of k slots (no allocation: routers call it once per token); returns
/// how many were filled (k, or fewer when count < k).
@inlinable
public func topK(_ x: UnsafePointer<Float>, count: Int, k: Int, indices: UnsafeMutablePointer<Int32>, values: UnsafeMutablePointer<Float>) -> Int {
    guard k > 0 else { return 0 }
    var n = 0
    for i in 0..<count {
        let v = x[i]
        if n == k && !(v > values[k - 1]) { continue }
        var pos = n == k ? k - 1 : n
        while pos > 0 && v > values[pos - 1] {
            values[pos] = values[pos - 1]
            indices[pos] = indices[pos - 1]
            pos -= 1
        }
        values[pos] = v
        indices[pos] = Int32(i)
        if n < k { n += 1 }
    }
    return n
}

public enum TensorError: Error, CustomStringConvertible, Equatable {
    case unsupported(String)
    case lapack(String, Int32)
    case shape(String)

    public var description: String {
        switch self {
        case .unsupported(let s): return "unsupported: \(s)"
        case .lapack(let routine, let info): return "\(routine) failed (info = \(info))"
        case .shape(let s): return "shape error: \(s)"
        }
    }
}
