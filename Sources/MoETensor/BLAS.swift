import CBLAS

/// Thin, checked wrappers over cblas. All matrices are row-major.
public enum BLAS {
    /// C = alpha · op(A) · op(B) + beta · C, with op = transpose when the flag is set.
    /// A is m×k after op, B is k×n after op, C is m×n; lda/ldb/ldc are row strides in elements.
    @inline(__always)
    public static func gemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            return
        }
        cblas_sgemm(
            CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// A ← A·L, or with `solve` A ← A·L⁻¹ (no inverse formed), in f64 for row-major A [m, n] and
    /// lower-triangular L [n, n] (dtrmm / dtrsm).
    public static func lowerRight(m: Int, n: Int, a: inout [Double], lower: [Double], solve: Bool = false) {
        guard m > 0, n > 0 else { return }
        lower.withUnsafeBufferPointer { l in
            a.withUnsafeMutableBufferPointer { x in
                let f = solve ? cblas_dtrsm : cblas_dtrmm
                f(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, Int32(m), Int32(n), 1,
                  l.baseAddress!, Int32(n), x.baseAddress!, Int32(n))
            }
        }
    }

    /// G = Aᵀ·A in f64 for row-major A [k, n] (a Gram matrix Σ rows xxᵀ), or with `transposed` G = A·Aᵀ for
    /// A [n, k] (the Gram matrix of A's rows); both triangles filled, G is n×n.
    public static func syrk(n: Int, k: Int, a: UnsafePointer<Double>, transposed: Bool = false, into g: UnsafeMutablePointer<Double>) {
        g.update(repeating: 0, count: n * n)
        guard n > 0, k > 0 else { return }
        cblas_dsyrk(CblasRowMajor, CblasUpper, transposed ? CblasNoTrans : CblasTrans, Int32(n), Int32(k), 1, a,
                    Int32(transposed ? k : n), 0, g, Int32(n))
        for i in 0..<n { for j in 0..<i { g[i * n + j] = g[j * n + i] } }
    }
}

/// y = x · Wᵀ (+ bias), the torch `F.linear`: x is [..., in], w is [out, in], y is [..., out].
/// Large products are split over the output columns across cores (BLAS itself stays single-threaded).
public func linear(_ x: Tensor, _ w: Tensor, bias: Tensor? = nil) -> Tensor {
    let k = x.cols, m = x.rows
    precondition(w.rank == 2 && w.shape[1] == k, "linear: input \(x.shape) vs weight \(w.shape)")
    let n = w.shape[0]
    var outShape = Array(x.shape.dropLast())
    outShape.append(n)
    let y = Tensor(zeros: outShape)
    linear(x.data, rows: m, in: k, weight: w.data, out: n, into: y.data, ldy: n)
    if let bias {
        precondition(bias.count == n, "linear: bias \(bias.shape) for \(n) outputs")
        for i in 0..<m { addInPlace(y.data + i * n, bias.data, count: n) }
    }
    return y
}

/// Raw form of `linear`: y[m, n] (row stride ldy) = x[m, k] · w[n, k]ᵀ.
public func linear(
    _ x: UnsafePointer<Float>, rows m: Int, in k: Int, weight w: UnsafePointer<Float>, out n: Int,
    into y: UnsafeMutablePointer<Float>, ldy: Int, accumulate: Bool = false
) {
    let flops = m * n * k
    let beta: Float = accumulate ? 1 : 0
    // Split (or not) by the product's size alone, in fixed blocks: the same calls on any number of threads.
    if flops < 1 << 18 || n < 32 {
        BLAS.gemm(transB: true, m: m, n: n, k: k, a: x, lda: k, b: w, ldb: k, beta: beta, c: y, ldc: ldy)
        return
    }
    let ys = SendablePointer(y)
    parallelBlocks(n, block: blasColumnBlock) { r in
        BLAS.gemm(transB: true, m: m, n: r.count, k: k, a: x, lda: k, b: w + r.lowerBound * k, ldb: k,
                  beta: beta, c: ys + r.lowerBound, ldc: ldy)
    }
}

/// C = A · B (or A · Bᵀ) for 2-D tensors.
public func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
    precondition(a.rank == 2 && b.rank == 2, "matmul needs 2-D tensors, got \(a.shape) and \(b.shape)")
    let m = transposeA ? a.shape[1] : a.shape[0]
    let k = transposeA ? a.shape[0] : a.shape[1]
    let kb = transposeB ? b.shape[1] : b.shape[0]
    let n = transposeB ? b.shape[0] : b.shape[1]
    precondition(k == kb, "matmul: inner dimensions \(a.shape) · \(b.shape)")
    let c = Tensor(zeros: [m, n])
    BLAS.gemm(transA: transposeA, transB: transposeB, m: m, n: n, k: k,
              a: a.data, lda: a.shape[1], b: b.data, ldb: b.shape[1], c: c.data, ldc: n)
    return c
}
