import MoETensor

/// A frozen linear map plus a LoRA adapter (Hu et al. 2021, as HF PEFT defines it):
/// y = base(x) + (α/r) · (x·Aᵀ)·Bᵀ with A [r, in] and B [out, r]. Dropout on the adapter's input is applied
/// only in training (MoETraining); here, at inference, it is the identity.
public struct LoRALinear: LinearLayer {
    public let base: any LinearLayer
    public let a: Tensor
    public let b: Tensor
    public let scale: Float
    public let dropout: Float

    public init(base: any LinearLayer, a: Tensor, b: Tensor, scale: Float, dropout: Float = 0) {
        precondition(a.rank == 2 && b.rank == 2 && a.shape[1] == base.inFeatures && b.shape[0] == base.outFeatures && a.shape[0] == b.shape[1],
                     "LoRA factors \(a.shape), \(b.shape) do not fit a \(base.outFeatures)×\(base.inFeatures) layer")
        self.base = base; self.a = a; self.b = b; self.scale = scale; self.dropout = dropout
    }

    public var rank: Int { a.shape[0] }
    public var inFeatures: Int { base.inFeatures }
    public var outFeatures: Int { base.outFeatures }
    public var parameterCount: Int { base.parameterCount + a.count + b.count }
    public var weightBytes: Int { base.weightBytes + (a.count + b.count) * 4 }

    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, parallel: Bool) {
        base.apply(x, rows: rows, into: y, ldy: ldy, parallel: parallel)
        let mid = Tensor(zeros: [rows, rank])
        BLAS.gemm(transB: true, m: rows, n: rank, k: inFeatures, a: x, lda: inFeatures, b: a.data, ldb: inFeatures, c: mid.data, ldc: rank)
        BLAS.gemm(transB: true, m: rows, n: outFeatures, k: rank, alpha: scale, a: mid.data, lda: rank, b: b.data, ldb: rank,
                  beta: 1, c: y, ldc: ldy)
    }

    public func applyTransposed(_ dy: UnsafePointer<Float>, rows: Int, into dx: UnsafeMutablePointer<Float>, ldx: Int, accumulate: Bool, parallel: Bool) {
        base.applyTransposed(dy, rows: rows, into: dx, ldx: ldx, accumulate: accumulate, parallel: parallel)
        let mid = Tensor(zeros: [rows, rank])
        WeightMatrix(b).multiplyTransposed(dy, m: rows, into: mid.data, ldx: rank, alpha: scale, parallel: parallel)
        WeightMatrix(a).multiplyTransposed(mid.data, m: rows, into: dx, ldx: ldx, accumulate: true, parallel: parallel)
    }

    public func forEachParameter(_ body: (String, Parameter) -> Void) {
        base.forEachParameter(body)
        body(".lora_A", .tensor(a))
        body(".lora_B", .tensor(b))
    }

    public func denseWeight() -> Tensor { merged().denseWeight() }

    /// The base with the adapter merged in (W + s·B·A; factor concatenation for a low-rank base).
    public func merged() -> any LinearLayer { base.adding(b, a, scale: scale) }

    public func adding(_ lb: Tensor, _ la: Tensor, scale s: Float) -> any LinearLayer { merged().adding(lb, la, scale: s) }

    public func trainable() -> any LinearLayer { LoRALinear(base: base.trainable(), a: a, b: b, scale: scale, dropout: dropout) }
}
