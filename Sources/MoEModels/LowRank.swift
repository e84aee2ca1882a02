import MoETensor

/// A linear map stored as two factors, W ≈ A·B with A [out, r] and B [r, in]: applied as two skinny
/// GEMMs (x·Bᵀ, then ·Aᵀ). What intra-expert low-rank decomposition produces; stored in safetensors as
/// `<weight name minus .weight>.lowrank_a` and `.lowrank_b`. Like a dense weight, the factors stay in their
/// stored dtype (a view of the mapped checkpoint, read in place) until `trainable()` widens them to f32.
/// An f32 bias [out] (gpt-oss's experts have one) is added after the second product.
public struct LowRankLinear: LinearLayer {
    public let a: WeightMatrix
    public let b: WeightMatrix
    public let bias: Tensor?

    public init(a: WeightMatrix, b: WeightMatrix, bias: Tensor? = nil) {
        precondition(a.cols == b.rows, "low-rank factors \(a.shape) · \(b.shape) do not chain")
        precondition(bias == nil || bias!.count == a.rows, "bias \(bias!.shape) for factors \(a.shape) · \(b.shape)")
        self.a = a
        self.b = b
        self.bias = bias
    }

    /// f32 factors (trainable in place).
    public init(a: Tensor, b: Tensor, bias: Tensor? = nil) {
        precondition(a.rank == 2 && b.rank == 2, "low-rank factors \(a.shape) · \(b.shape) must be 2-D")
        self.init(a: WeightMatrix(a), b: WeightMatrix(b), bias: bias)
    }

    public var rank: Int { b.rows }
    public var inFeatures: Int { b.cols }
    public var outFeatures: Int { a.rows }
    public var parameterCount: Int { a.count + b.count + (bias?.count ?? 0) }
    public var weightBytes: Int { a.byteCount + b.byteCount + (bias?.count ?? 0) * 4 }

    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, parallel: Bool) {
        let mid = Tensor(zeros: [rows, rank])
        b.multiply(x, m: rows, into: mid.data, ldy: rank, parallel: parallel)
        a.multiply(mid.data, m: rows, into: y, ldy: ldy, parallel: parallel)
        if let bias { for r in 0..<rows { addInPlace(y + r * ldy, bias.data, count: outFeatures) } }
    }

    public func applyTransposed(_ dy: UnsafePointer<Float>, rows: Int, into dx: UnsafeMutablePointer<Float>, ldx: Int, accumulate: Bool, parallel: Bool) {
        let mid = Tensor(zeros: [rows, rank])
        a.multiplyTransposed(dy, m: rows, into: mid.data, ldx: rank, parallel: parallel)
        b.multiplyTransposed(mid.data, m: rows, into: dx, ldx: ldx, accumulate: accumulate, parallel: parallel)
    }

    public func forEachParameter(_ body: (String, Parameter) -> Void) {
        body(".lowrank_a", a.tensor.map { .tensor($0) } ?? .stored(a))
        body(".lowrank_b", b.tensor.map { .tensor($0) } ?? .stored(b))
        if let bias { body(".bias", .tensor(bias)) }
    }

    public func denseWeight() -> Tensor { matmul(a.float(), b.float()) }

    /// Exact at rank r + r': A' = [A | s·B_adapter], B' = [B; A_adapter].
    public func adding(_ lb: Tensor, _ la: Tensor, scale: Float) -> any LinearLayer {
        let m = outFeatures, n = inFeatures, r0 = rank, r1 = la.shape[0]
        let a = a.tensor ?? a.float(), b = b.tensor ?? b.float()
        let newA = Tensor(zeros: [m, r0 + r1]), newB = Tensor(zeros: [r0 + r1, n])
        for i in 0..<m {
            for j in 0..<r0 { newA.data[i * (r0 + r1) + j] = a.data[i * r0 + j] }
            for j in 0..<r1 { newA.data[i * (r0 + r1) + r0 + j] = scale * lb.data[i * r1 + j] }
        }
        newB.data.update(from: b.data, count: r0 * n)
        (newB.data + r0 * n).update(from: la.data, count: r1 * n)
        return LowRankLinear(a: newA, b: newB, bias: bias)
    }

    public func trainable() -> any LinearLayer {
        a.tensor != nil && b.tensor != nil ? self : LowRankLinear(a: a.tensor ?? a.float(), b: b.tensor ?? b.float(), bias: bias)
    }
}
