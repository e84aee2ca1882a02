import MoETensor

/// A linear map stored as two factors, W ≈ A·B with A [out, r] and B [r, in]: applied as two skinny
/// GEMMs (x·Bᵀ, then ·Aᵀ). What intra-expert low-rank decomposition produces; stored in safetensors as
/// `<weight name minus .weight>.lowrank_a` and `.lowrank_b`.
public struct LowRankLinear: LinearLayer {
    public let a: Tensor
    public let b: Tensor

    public init(a: Tensor, b: Tensor) {
        precondition(a.rank == 2 && b.rank == 2 && a.shape[1] == b.shape[0], "low-rank factors \(a.shape) · \(b.shape) do not chain")
        self.a = a
        self.b = b
    }

    public var rank: Int { b.shape[0] }
    public var inFeatures: Int { b.shape[1] }
    public var outFeatures: Int { a.shape[0] }
    public var parameterCount: Int { a.count + b.count }

    public func apply(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, parallel: Bool) {
        let mid = Tensor(zeros: [rows, rank])
        if parallel {
            linear(x, rows: rows, in: inFeatures, weight: b.data, out: rank, into: mid.data, ldy: rank)
            linear(mid.data, rows: rows, in: rank, weight: a.data, out: outFeatures, into: y, ldy: ldy)
        } else {
            BLAS.gemm(transB: true, m: rows, n: rank, k: inFeatures, a: x, lda: inFeatures, b: b.data, ldb: inFeatures, c: mid.data, ldc: rank)
            BLAS.gemm(transB: true, m: rows, n: outFeatures, k: rank, a: mid.data, lda: rank, b: a.data, ldb: rank, c: y, ldc: ldy)
        }
    }
}
